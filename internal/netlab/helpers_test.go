package netlab

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// received is one datagram seen by a receiver: its sequence number, the
// one-way delay (sender's clock before send to the kernel's receive
// timestamp: same host, same CLOCK_REALTIME) and its TOS / traffic class.
type received struct {
	seq    uint64
	oneWay time.Duration
	tos    int
}

// receiver is a UDP socket inside a site that records what arrives.
type receiver struct {
	conn *net.UDPConn
	mu   sync.Mutex
	got  []received
	done chan struct{}
}

func listenUDP(t testing.TB, s *Site, addr netip.Addr, port int) *receiver {
	t.Helper()
	var conn *net.UDPConn
	err := s.Do(func() error {
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr, uint16(port))))
		if err != nil {
			return err
		}
		conn = c
		return control(c, func(fd int) error {
			if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); err != nil {
				return err
			}
			if addr.Is4() {
				return unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_RECVTOS, 1)
			}
			return unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_RECVTCLASS, 1)
		})
	})
	if err != nil {
		t.Fatalf("listening on %v in %s: %v", addr, s.Name(), err)
	}
	r := &receiver{conn: conn, done: make(chan struct{})}
	go r.loop()
	t.Cleanup(func() { conn.Close(); <-r.done })
	return r
}

func (r *receiver) loop() {
	defer close(r.done)
	b := make([]byte, 65536)
	oob := make([]byte, 512)
	for {
		n, oobn, _, _, err := r.conn.ReadMsgUDP(b, oob)
		if err != nil {
			return
		}
		if n < 16 {
			continue
		}
		rec := received{seq: binary.BigEndian.Uint64(b), tos: -1}
		sent := int64(binary.BigEndian.Uint64(b[8:]))
		msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
		for _, m := range msgs {
			switch {
			case m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SCM_TIMESTAMPNS && len(m.Data) >= 16:
				sec := int64(binary.NativeEndian.Uint64(m.Data))
				nsec := int64(binary.NativeEndian.Uint64(m.Data[8:]))
				rec.oneWay = time.Duration(sec*1e9 + nsec - sent)
			case m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_TOS && len(m.Data) >= 1:
				rec.tos = int(m.Data[0])
			case m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_TCLASS && len(m.Data) >= 4:
				rec.tos = int(binary.NativeEndian.Uint32(m.Data))
			}
		}
		r.mu.Lock()
		r.got = append(r.got, rec)
		r.mu.Unlock()
	}
}

// take returns what arrived so far and starts a new collection.
func (r *receiver) take() []received {
	r.mu.Lock()
	defer r.mu.Unlock()
	g := r.got
	r.got = nil
	return g
}

// sender is a UDP socket inside a site aimed at one address.
type sender struct {
	conn *net.UDPConn
	seq  uint64
}

func dialUDP(t testing.TB, s *Site, dst netip.Addr, port int) *sender {
	t.Helper()
	var conn *net.UDPConn
	err := s.Do(func() (err error) {
		conn, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(dst, uint16(port))))
		return err
	})
	if err != nil {
		t.Fatalf("dialling %v from %s: %v", dst, s.Name(), err)
	}
	t.Cleanup(func() { conn.Close() })
	return &sender{conn: conn}
}

// send sends n datagrams of size bytes, one every gap, each carrying its
// sequence number and send time.
func (s *sender) send(t testing.TB, n, size int, gap time.Duration) {
	t.Helper()
	b := make([]byte, max(size, 16))
	start := time.Now()
	for i := range n {
		if d := time.Until(start.Add(time.Duration(i) * gap)); d > 0 {
			time.Sleep(d)
		}
		s.seq++
		binary.BigEndian.PutUint64(b, s.seq)
		binary.BigEndian.PutUint64(b[8:], uint64(time.Now().UnixNano()))
		_, err := s.conn.Write(b)
		if errors.Is(err, syscall.EMSGSIZE) || errors.Is(err, syscall.ECONNREFUSED) {
			// An ICMP error for an earlier datagram is reported on the
			// next call of a connected socket; the datagram was not sent.
			_, err = s.conn.Write(b)
		}
		if err != nil {
			t.Fatalf("sending datagram %d: %v", i, err)
		}
	}
}

// control runs f on the socket's fd.
func control(c syscall.Conn, f func(fd int) error) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = f(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return cond()
}

// collect waits until want datagrams arrived (or settle passes without a
// new one) and returns them.
func (r *receiver) collect(want int, settle time.Duration) []received {
	last, lastN := time.Now(), 0
	for {
		r.mu.Lock()
		n := len(r.got)
		r.mu.Unlock()
		if n >= want {
			break
		}
		if n != lastN {
			last, lastN = time.Now(), n
		}
		if time.Since(last) > settle {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	return r.take()
}

func oneWays(rs []received) []time.Duration {
	out := make([]time.Duration, len(rs))
	for i, r := range rs {
		out[i] = r.oneWay
	}
	slices.Sort(out)
	return out
}

func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[int(q*float64(len(sorted)-1)+0.5)]
}

// binomialInterval is the two-sided 99.9% normal-approximation interval of
// the number of losses among n trials of probability p.
func binomialInterval(n int, p float64) (lo, hi float64) {
	const z = 3.2905 // 99.9% two-sided
	mean := float64(n) * p
	sd := math.Sqrt(float64(n) * p * (1 - p))
	return mean - z*sd, mean + z*sd
}

func describe(rs []received) string {
	ow := oneWays(rs)
	return fmt.Sprintf("n=%d min=%v p50=%v p99=%v max=%v", len(ow), quantile(ow, 0), quantile(ow, 0.5), quantile(ow, 0.99), quantile(ow, 1))
}
