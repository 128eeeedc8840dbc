// Package pmtu measures the path MTU to a target with ICMP echo requests
// that must not be fragmented, searching between 1280 and 9001 bytes (Direct
// Connect private VIFs carry jumbo frames). It tells a path that reports
// its limit (Fragmentation Needed / Packet Too Big) from an MTU black hole
// where big packets vanish without a word.
//
// IPv4 sockets use IP_PMTUDISC_PROBE and IPv6 sockets IPV6_DONTFRAG with
// IPV6_PMTUDISC_PROBE: DF is set, yet the kernel ignores the path MTU it has
// cached, so every search measures the path as it is now, not what an
// earlier Fragmentation Needed taught the kernel.
package pmtu

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/probed/probed/probe/internal/rawsock"
)

// Search bounds and defaults.
const (
	DefaultMin     = 1280 // the IPv6 minimum MTU; below it a path is broken, not small
	DefaultMax     = 9001
	DefaultTimeout = time.Second
	DefaultRetries = 2
)

// Target is one search.
type Target struct {
	Dst netip.Addr
	// Src is the source address; zero lets the routing table pick.
	Src netip.Addr
	// Interface sends the probes out of this device; "" lets routing choose.
	Interface string
	// Min and Max bound the search in bytes of IP packet (headers included).
	Min, Max int
	// Timeout is how long to wait for the answer to one probe.
	Timeout time.Duration
	// Retries is how many more times a size that got no answer is sent
	// before it counts as dropped, so random loss is not a black hole.
	Retries int
	TOS     uint8
}

// Result is what a search found.
type Result struct {
	// MTU is the largest IP packet, in bytes, that reached the target
	// and was answered; 0 when not even Min got through.
	MTU int
	// Reached is false when no probe was answered at all.
	Reached bool
	// Blackhole is set when the smallest size that failed vanished
	// without Fragmentation Needed / Packet Too Big: a router drops big
	// packets silently and TCP sessions stall instead of shrinking.
	Blackhole bool
	// Reported is the next-hop MTU from the last Fragmentation Needed /
	// Packet Too Big (or the local interface's refusal), 0 if none came.
	Reported int
	Probes   int
	Duration time.Duration
}

type outcome uint8

const (
	silent outcome = iota // no answer after every retry
	fits                  // echo reply
	tooBig                // Fragmentation Needed / Packet Too Big / EMSGSIZE
)

type answer struct {
	o   outcome
	mtu int
}

type pkey struct {
	dst netip.Addr
	seq uint16
}

// Prober runs searches. Safe for concurrent use; each search has one probe
// in flight, so a search never adds more than one packet per timeout.
type Prober struct {
	id uint16

	mu      sync.Mutex
	closed  bool
	seq     uint16
	pending map[pkey]chan answer
	v4, v6  *os.File
	fd4     int
	fd6     int
	wg      sync.WaitGroup
}

// New returns a Prober with its raw ICMP sockets open, in the network
// namespace of the calling thread. Without kernel IPv6 support only IPv4
// targets can be searched.
func New() (*Prober, error) {
	var b [2]byte
	_, _ = rand.Read(b[:])
	// Identifiers 0xc000-0xffff are the path features' (trace uses the
	// same range), so the echo prober can tell their replies apart.
	p := &Prober{id: 0xc000 | binary.BigEndian.Uint16(b[:]), pending: map[pkey]chan answer{}, fd4: -1, fd6: -1}
	if _, err := p.socket(false); err != nil {
		return nil, err
	}
	if _, err := p.socket(true); err != nil && !errors.Is(err, unix.EAFNOSUPPORT) {
		p.Close()
		return nil, err
	}
	return p, nil
}

// Close closes the sockets.
func (p *Prober) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	for _, f := range []*os.File{p.v4, p.v6} {
		if f != nil {
			f.Close()
		}
	}
	p.mu.Unlock()
	p.wg.Wait()
	return nil
}

func (p *Prober) socket(v6 bool) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return -1, errors.New("prober is closed")
	}
	if !v6 && p.v4 != nil {
		return p.fd4, nil
	}
	if v6 && p.v6 != nil {
		return p.fd6, nil
	}
	family, proto := unix.AF_INET, unix.IPPROTO_ICMP
	if v6 {
		family, proto = unix.AF_INET6, unix.IPPROTO_ICMPV6
	}
	fd, err := unix.Socket(family, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, proto)
	if err != nil {
		return -1, fmt.Errorf("opening raw ICMP socket for path MTU probes: %w", err)
	}
	if v6 {
		err = errors.Join(
			unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, unix.IPV6_PMTUDISC_PROBE),
			unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_DONTFRAG, 1))
	} else {
		err = unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_PROBE)
	}
	if err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("setting don't-fragment on the path MTU socket: %w", err)
	}
	// Root may go past net.core.rmem_max: a discovery burst must not
	// overflow the queue and turn answered hops into silent ones.
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20)
	}
	f := os.NewFile(uintptr(fd), "pmtu-icmp")
	if v6 {
		p.v6, p.fd6 = f, fd
	} else {
		p.v4, p.fd4 = f, fd
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.readLoop(f, v6)
	}()
	return fd, nil
}

func (p *Prober) readLoop(f *os.File, v6 bool) {
	rawsock.ReadLoop(f, func(m []byte, src netip.Addr, _ time.Time) {
		if !v6 {
			// Raw IPv4 sockets deliver the IP header.
			if len(m) < 20 {
				return
			}
			ihl := int(m[0]&0x0f) * 4
			if len(m) < ihl {
				return
			}
			m = m[ihl:]
		}
		if k, a, ok := p.parse(m, src, v6); ok {
			p.deliver(k, a)
		}
	})
}

// parse reads an echo reply from the target or a Fragmentation Needed /
// Packet Too Big quoting one of our echo requests.
func (p *Prober) parse(m []byte, src netip.Addr, v6 bool) (pkey, answer, bool) {
	if len(m) < 8 {
		return pkey{}, answer{}, false
	}
	switch {
	case !v6 && m[0] == 0, v6 && m[0] == 129: // echo reply
		if binary.BigEndian.Uint16(m[4:]) != p.id {
			return pkey{}, answer{}, false
		}
		return pkey{dst: src, seq: binary.BigEndian.Uint16(m[6:])}, answer{o: fits}, true
	case !v6 && m[0] == 3 && m[1] == 4: // fragmentation needed and DF set
		q := m[8:]
		if len(q) < 20 || q[0]>>4 != 4 || q[9] != 1 {
			return pkey{}, answer{}, false
		}
		ihl := int(q[0]&0x0f) * 4
		if len(q) < ihl+8 || q[ihl] != 8 || binary.BigEndian.Uint16(q[ihl+4:]) != p.id {
			return pkey{}, answer{}, false
		}
		dst := netip.AddrFrom4([4]byte(q[16:20]))
		return pkey{dst: dst, seq: binary.BigEndian.Uint16(q[ihl+6:])}, answer{o: tooBig, mtu: int(binary.BigEndian.Uint16(m[6:]))}, true
	case v6 && m[0] == 2: // packet too big
		q := m[8:]
		if len(q) < 48 || q[0]>>4 != 6 || q[6] != 58 || q[40] != 128 || binary.BigEndian.Uint16(q[44:]) != p.id {
			return pkey{}, answer{}, false
		}
		dst := netip.AddrFrom16([16]byte(q[24:40]))
		return pkey{dst: dst, seq: binary.BigEndian.Uint16(q[46:])}, answer{o: tooBig, mtu: int(binary.BigEndian.Uint32(m[4:]))}, true
	}
	return pkey{}, answer{}, false
}

func (p *Prober) deliver(k pkey, a answer) {
	p.mu.Lock()
	ch, ok := p.pending[k]
	if ok {
		delete(p.pending, k)
	}
	p.mu.Unlock()
	if ok {
		ch <- a // buffered, one slot, one delivery
	}
}

// Search finds the path MTU to tg.Dst.
func (p *Prober) Search(ctx context.Context, tg Target) (Result, error) {
	start := time.Now()
	dst := tg.Dst.Unmap()
	if !dst.IsValid() {
		return Result{}, errors.New("path MTU search: no destination address")
	}
	lo, hi := tg.Min, tg.Max
	if lo <= 0 {
		lo = DefaultMin
	}
	if hi <= 0 {
		hi = DefaultMax
	}
	if hi < lo {
		return Result{}, fmt.Errorf("path MTU search for %s: max %d below min %d", dst, hi, lo)
	}
	if tg.Timeout <= 0 {
		tg.Timeout = DefaultTimeout
	}
	if tg.Retries < 0 {
		tg.Retries = 0
	}
	fd, err := p.socket(dst.Is6())
	if err != nil {
		return Result{}, fmt.Errorf("path MTU search for %s: %w", dst, err)
	}
	ifindex := 0
	if tg.Interface != "" {
		ifi, err := net.InterfaceByName(tg.Interface)
		if err != nil {
			return Result{}, fmt.Errorf("path MTU search for %s: interface %s: %w", dst, tg.Interface, err)
		}
		ifindex = ifi.Index
	}
	res := Result{}
	try := func(size int) (answer, error) {
		for i := 0; i <= tg.Retries; i++ {
			res.Probes++
			a, err := p.probe(ctx, fd, dst, tg, ifindex, size)
			if err != nil || a.o != silent {
				return a, err
			}
		}
		return answer{o: silent}, nil
	}
	done := func() (Result, error) {
		res.Duration = time.Since(start)
		return res, nil
	}

	a, err := try(lo)
	if err != nil {
		return res, err
	}
	if a.o != fits {
		if a.o == tooBig {
			res.Reported = a.mtu
		}
		return done()
	}
	res.Reached, res.MTU = true, lo
	// failSilent tells how the smallest size known to fail failed.
	failSilent := false
	hint := 0
	probeSize := hi
	for lo < hi {
		a, err := try(probeSize)
		if err != nil {
			return res, err
		}
		switch a.o {
		case fits:
			lo = probeSize
			// A router reported this very size as its limit and it
			// fits: anything bigger is refused there.
			if probeSize == hint {
				hi = lo
			}
		default:
			hi = probeSize - 1
			failSilent = a.o == silent
			if a.o == tooBig {
				res.Reported = a.mtu
				hint = a.mtu
			}
		}
		if hint > lo && hint <= hi && hint != probeSize {
			probeSize = hint
		} else {
			probeSize = (lo + hi + 1) / 2
		}
	}
	res.MTU = lo
	// The loop only ever lowers hi, so the last failure is the
	// smallest failing size: MTU+1, or the size a router reported.
	res.Blackhole = failSilent
	return done()
}

// probe sends one echo request of size bytes (IP header included) and
// waits for what comes back.
func (p *Prober) probe(ctx context.Context, fd int, dst netip.Addr, tg Target, ifindex, size int) (answer, error) {
	v6 := dst.Is6()
	hdr := 20
	if v6 {
		hdr = 40
	}
	m := make([]byte, size-hdr)
	if v6 {
		m[0] = 128
	} else {
		m[0] = 8
	}
	ch := make(chan answer, 1)
	p.mu.Lock()
	p.seq++
	seq := p.seq
	k := pkey{dst: dst, seq: seq}
	p.pending[k] = ch
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.pending, k)
		p.mu.Unlock()
	}()
	binary.BigEndian.PutUint16(m[4:], p.id)
	binary.BigEndian.PutUint16(m[6:], seq)
	if !v6 { // the kernel fills the ICMPv6 checksum, not the ICMPv4 one
		binary.BigEndian.PutUint16(m[2:], checksum(m))
	}
	var err error
	if v6 {
		err = unix.Sendmsg(fd, m, oob6(tg, ifindex), &unix.SockaddrInet6{Addr: dst.As16()}, 0)
	} else {
		err = unix.Sendmsg(fd, m, oob4(tg, ifindex), &unix.SockaddrInet4{Addr: dst.As4()}, 0)
	}
	switch {
	case errors.Is(err, unix.EMSGSIZE):
		// The local interface is already smaller: a clean refusal.
		return answer{o: tooBig, mtu: 0}, nil
	case err != nil:
		return answer{}, fmt.Errorf("path MTU search for %s: sending %d bytes: %w", dst, size, err)
	}
	t := time.NewTimer(tg.Timeout)
	defer t.Stop()
	select {
	case a := <-ch:
		return a, nil
	case <-t.C:
		return answer{o: silent}, nil
	case <-ctx.Done():
		return answer{}, ctx.Err()
	}
}

func checksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}
