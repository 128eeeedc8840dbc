package rawsock_test

import (
	"encoding/binary"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/probed/probed/probe/internal/rawsock"
	"github.com/probed/probed/probe/trace/tracetest"
)

// echo4 is an ICMP echo request in an IPv4 header (IP_HDRINCL) with seq.
func echo4(src, dst netip.Addr, seq uint16) []byte {
	b := make([]byte, 20+16)
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	b[8] = 64
	b[9] = 1
	s, d := src.As4(), dst.As4()
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	m := b[20:]
	m[0] = 8
	binary.BigEndian.PutUint16(m[4:], 0xc0de)
	binary.BigEndian.PutUint16(m[6:], seq)
	var sum uint32
	for i := 0; i < len(m); i += 2 {
		sum += uint32(m[i])<<8 | uint32(m[i+1])
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(m[2:], ^uint16(sum))
	return b
}

func quantile(s []time.Duration, q float64) time.Duration {
	i := int(q*float64(len(s))+0.5) - 1
	return s[max(0, min(i, len(s)-1))]
}

// Every packet sent on a send socket gets a kernel transmit timestamp, read
// back with the packet (after the veth's Ethernet header), no earlier than
// the wall clock read before the send call; every reply read by ReadLoop
// carries the kernel's receive time, no later than the moment it was read.
// The test logs how far the wall clock read just before sendmsg is from
// the kernel's transmit stamp, idle and with the sender's only P shared
// with a CPU-burning goroutine: the figures docs/paths.md quotes.
func TestKernelTimestampsBothEnds(t *testing.T) {
	c := tracetest.NewChain(t, 1)
	src, dst := c.SrcAddr("ip4"), c.DstAddr("ip4")
	var sendFD, recvFD int
	var recv *os.File
	err := c.Src.Do(func() error {
		var err error
		if sendFD, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW); err != nil {
			return err
		}
		if err = rawsock.SetTxTimestamps(sendFD); err != nil {
			return err
		}
		if recvFD, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.IPPROTO_ICMP); err != nil {
			return err
		}
		recv = os.NewFile(uintptr(recvFD), "icmp")
		return rawsock.SetRxTimestamps(recvFD)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(sendFD)

	type rx struct{ kernel, read time.Time }
	var mu sync.Mutex
	replies := map[uint16]rx{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		rawsock.ReadLoop(recv, func(b []byte, from netip.Addr, at time.Time) {
			read := time.Now()
			ihl := int(b[0]&0x0f) * 4
			m := b[ihl:]
			if from != dst || len(m) < 8 || m[0] != 0 || binary.BigEndian.Uint16(m[4:]) != 0xc0de {
				return
			}
			mu.Lock()
			replies[binary.BigEndian.Uint16(m[6:])] = rx{at, read}
			mu.Unlock()
		})
	}()
	defer func() { recv.Close(); <-done }()

	var tb rawsock.TxBuffers
	seq := uint16(0)
	run := func(name string, n int) {
		var skew, lateRead []time.Duration
		missing := 0
		for i := 0; i < n; i++ {
			seq++
			pkt := echo4(src, dst, seq)
			var kernel time.Time
			user := time.Now()
			if err := unix.Sendmsg(sendFD, pkt, nil, &unix.SockaddrInet4{Addr: dst.As4()}, 0); err != nil {
				t.Fatal(err)
			}
			rawsock.DrainTxTimestamps(sendFD, &tb, func(b []byte, at time.Time) {
				for _, l3 := range rawsock.NetworkHeaders(b) {
					if len(l3) >= 28 && l3[0] == 0x45 && binary.BigEndian.Uint16(l3[26:]) == seq {
						kernel = at
					}
				}
			})
			if kernel.IsZero() {
				missing++
				continue
			}
			if kernel.Before(user) {
				t.Errorf("%s: transmit stamp %v before the wall clock read ahead of sendmsg", name, user.Sub(kernel))
			}
			skew = append(skew, kernel.Sub(user))
			time.Sleep(time.Millisecond)
		}
		time.Sleep(100 * time.Millisecond)
		mu.Lock()
		for s := seq - uint16(n) + 1; s != seq+1; s++ {
			r, ok := replies[s]
			if !ok {
				continue
			}
			if r.kernel.After(r.read) {
				t.Errorf("%s: receive stamp after the packet was read", name)
			}
			lateRead = append(lateRead, r.read.Sub(r.kernel))
		}
		mu.Unlock()
		if missing > 0 || len(lateRead) < n*9/10 {
			t.Errorf("%s: %d of %d packets without transmit stamp, %d replies read", name, missing, n, len(lateRead))
		}
		slices.Sort(skew)
		slices.Sort(lateRead)
		if len(skew) > 0 && len(lateRead) > 0 {
			t.Logf("%s: transmit stamp - wall clock before sendmsg: p50 %v p90 %v p99 %v max %v; reply read - receive stamp: p50 %v p90 %v p99 %v max %v",
				name, quantile(skew, 0.5), quantile(skew, 0.9), quantile(skew, 0.99), skew[len(skew)-1],
				quantile(lateRead, 0.5), quantile(lateRead, 0.9), quantile(lateRead, 0.99), lateRead[len(lateRead)-1])
		}
	}
	run("idle", 500)

	prev := runtime.GOMAXPROCS(1)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		x := 0
		for {
			select {
			case <-stop:
				return
			default:
			}
			for i := 0; i < 1_000_000; i++ {
				x += i
			}
			_ = x
		}
	}()
	run("one P shared with a busy goroutine", 200)
	close(stop)
	wg.Wait()
	runtime.GOMAXPROCS(prev)
}
