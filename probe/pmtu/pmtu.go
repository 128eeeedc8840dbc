// Package pmtu measures the path MTU to a target with ICMP echo requests
// that must not be fragmented, searching up to 9001 bytes (Direct Connect
// private VIFs carry jumbo frames) and down to 1280 bytes for IPv6 (its
// minimum MTU) or 68 bytes for IPv4 (RFC 791: the least every link must
// carry; RFC 1191 lets Fragmentation Needed report any MTU down to it). It
// tells a path that reports its limit (Fragmentation Needed / Packet Too
// Big) from an MTU black hole where big packets vanish without a word.
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

	"github.com/probed/probed/internal/inet"
	"github.com/probed/probed/probe/internal/rawsock"
)

// Search bounds and defaults.
const (
	// DefaultMin is the first size a search sends: the IPv6 minimum MTU
	// and the floor of almost every IPv4 path. Below it an IPv6 path is
	// broken, not small; an IPv4 search goes on down to MinIPv4.
	DefaultMin = 1280
	// MinIPv4 and MinIPv6 are the smallest MTUs a link of the family may
	// have (RFC 791, RFC 8200): the lowest a search goes.
	MinIPv4        = 68
	MinIPv6        = 1280
	DefaultMax     = 9001
	DefaultTimeout = time.Second
	DefaultRetries = 2
	// readMargin is how long after a probe's timeout an answer is still
	// taken if the kernel received it within the timeout: on a loaded
	// agent the reader may get to it some milliseconds late.
	readMargin = 50 * time.Millisecond
)

// Plateaus are the MTUs tried, largest first, when a router's Fragmentation
// Needed carries no usable next-hop MTU (0 from a router older than RFC
// 1191, or a value not below the size it refused), or the local interface
// refuses a size: the RFC 1191 table (section 7) plus the MTUs common today
// (9001 and 8500 on Direct Connect, 1500 Ethernet, 1280 the IPv6 minimum
// and usual tunnel floor, 576 the IPv4 datagram every host accepts). A
// plateau that fits is checked with one probe one byte larger, so the
// result stays exact when the link's MTU is not on the table.
var Plateaus = []int{65535, 32000, 17914, 9001, 8500, 8166, 4352, 2002, 1500, 1492, 1280, 1006, 576, 508, 296, 68}

// plateauBelow is the largest plateau below size, 0 if none.
func plateauBelow(size int) int {
	for _, p := range Plateaus {
		if p < size {
			return p
		}
	}
	return 0
}

// Target is one search.
type Target struct {
	Dst netip.Addr
	// Src is the source address; zero lets the routing table pick.
	Src netip.Addr
	// Interface sends the probes out of this device; "" lets routing choose.
	Interface string
	// Min and Max bound the search in bytes of IP packet (headers
	// included). Zero Min is the family's least MTU (MinIPv4, MinIPv6);
	// no search goes below it. Zero Max is DefaultMax.
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
	// and was answered; 0 when no size got through. On IPv4 it may be
	// below DefaultMin (down to MinIPv4).
	MTU int
	// Reached is false when no probe was answered at all: not
	// DefaultMin, and (IPv4) not the least MTU either.
	Reached bool
	// Blackhole is set when the smallest size that failed vanished
	// without Fragmentation Needed / Packet Too Big: a router drops big
	// packets silently and TCP sessions stall instead of shrinking.
	Blackhole bool
	// Reported is the next-hop MTU from the last Fragmentation Needed /
	// Packet Too Big, 0 if none came, if the router left the field 0
	// (RFC 1191 "old" router) or if the last refusal was the local
	// interface's.
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
	at  time.Time // the kernel's receive time
	// local: the send failed with EMSGSIZE (the outgoing interface is
	// smaller); no packet left.
	local bool
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
	// Identifiers of the path features' range (trace uses it too), so
	// the echo prober can tell their replies apart.
	p := &Prober{id: inet.FlowID(uint32(binary.BigEndian.Uint16(b[:]))), pending: map[pkey]chan answer{}, fd4: -1, fd6: -1}
	if _, err := p.socket(false); err != nil {
		return nil, err
	}
	if _, err := p.socket(true); err != nil && !errors.Is(err, unix.EAFNOSUPPORT) {
		_ = p.Close()
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
	// An answer counts if the kernel received it within the timeout,
	// however late the reader gets to it.
	if err := rawsock.SetRxTimestamps(fd); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("enabling receive timestamps on the path MTU socket: %w", err)
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
	rawsock.ReadLoop(f, func(m []byte, src netip.Addr, at time.Time) {
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
			a.at = at
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
//
// The first probe is DefaultMin bytes (clamped to the bounds). If it fits,
// the next is Max, then the size a router reported, else the middle of
// what is left (binary search). A Fragmentation Needed / Packet Too Big
// whose next-hop MTU is below the refused size and not below the family's
// least MTU is a hint: the next probe has that size, and if it fits the
// search ends (the router said anything bigger is refused there) — so a
// hint equal to a size already known to fit ends the search at once. A
// report without a usable MTU (0 from an RFC 1191 "old" router) makes the
// next probe the next plateau below (Plateaus), and the local interface's
// refusal (EMSGSIZE) that interface's MTU; either, if it fits, is
// confirmed by a probe one byte larger.
// If the first probe does not fit, an IPv4 search goes on below it: to the
// reported MTU or plateau, or — after silence — to the least MTU, then
// binary search. Reached is false only when no size at all was answered.
func (p *Prober) Search(ctx context.Context, tg Target) (Result, error) {
	start := time.Now()
	dst := tg.Dst.Unmap()
	if !dst.IsValid() {
		return Result{}, errors.New("path MTU search: no destination address")
	}
	floor := MinIPv4
	if dst.Is6() {
		floor = MinIPv6
	}
	lo, hi := max(tg.Min, floor), tg.Max
	if tg.Min <= 0 {
		lo = floor
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

	// fit is the largest size known to pass (0: none yet); every size
	// above hi is known to fail. The MTU is fit once fit == hi.
	fit := 0
	// failSilent tells how the smallest size known to fail failed.
	failSilent := false
	// hint is the next size worth trying (a router's report or a
	// plateau), 0 if none; reported says a router named it, so if it
	// fits it is the MTU, while a plateau that fits must be confirmed.
	hint, reported := 0, false
	confirm := false // try fit+1 next: fit is a plateau
	routeMTU := -1   // the route's MTU, asked once on the first local refusal
	first := min(max(DefaultMin, lo), hi)
	size := first
	for {
		a, err := try(size)
		if err != nil {
			return res, err
		}
		switch a.o {
		case fits:
			fit, res.Reached = size, true
			if size == hint {
				if reported {
					hi = fit // a router said anything bigger is refused
				} else {
					confirm = true
				}
			}
			hint = 0
		case tooBig:
			hi, failSilent = size-1, false
			res.Reported = a.mtu
			if a.local && routeMTU < 0 {
				routeMTU = localMTU(dst, tg.Src, ifindex)
			}
			switch {
			case a.mtu >= lo && a.mtu < size:
				hint, reported = a.mtu, true
			case a.local && routeMTU >= lo && routeMTU < size:
				// The route's MTU: the interface's, or a path
				// MTU the kernel learnt earlier. Not a router's
				// word for now, so it is confirmed like a plateau.
				hint, reported = routeMTU, false
			default:
				hint, reported = plateauBelow(size), false
			}
			if hint == fit && fit > 0 {
				if reported {
					hi = fit // the report names a size known to pass
				} else {
					confirm = true
				}
			}
		default:
			hi, failSilent = size-1, true
			hint = 0
		}
		if fit >= hi || hi < lo {
			break
		}
		switch {
		case hint > fit && hint >= lo && hint <= hi:
			size = hint
		case confirm:
			size, confirm = fit+1, false
		case fit == first && size == first:
			size = hi // the first size fits: try the largest
		case fit == 0 && failSilent && size > lo:
			// Nothing fits yet and the size vanished: is the
			// target there at all? The least MTU tells.
			size = lo
		case fit == 0:
			size = (lo + hi + 1) / 2
		default:
			size = (fit + hi + 1) / 2
		}
	}
	res.MTU = fit
	// hi only ever falls, so the last failure is the smallest failing
	// size: MTU+1, or the size a router reported.
	res.Blackhole = res.Reached && failSilent
	res.Duration = time.Since(start)
	return res, nil
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
		binary.BigEndian.PutUint16(m[2:], inet.Checksum(m))
	}
	var err error
	sent := time.Now()
	if v6 {
		err = unix.Sendmsg(fd, m, oob6(tg, ifindex), &unix.SockaddrInet6{Addr: dst.As16()}, 0)
	} else {
		err = unix.Sendmsg(fd, m, oob4(tg, ifindex), &unix.SockaddrInet4{Addr: dst.As4()}, 0)
	}
	switch {
	case errors.Is(err, unix.EMSGSIZE):
		// The local interface is already smaller: a clean refusal,
		// without the interface's MTU (Search asks the route).
		return answer{o: tooBig, mtu: 0, local: true}, nil
	case err != nil:
		return answer{}, fmt.Errorf("path MTU search for %s: sending %d bytes: %w", dst, size, err)
	}
	// An answer counts when the kernel received it within the timeout;
	// the reader may hand it over up to readMargin later.
	inTime := func(a answer) answer {
		if a.at.Sub(sent) > tg.Timeout {
			return answer{o: silent}
		}
		return a
	}
	t := time.NewTimer(tg.Timeout + min(readMargin, tg.Timeout/2))
	defer t.Stop()
	select {
	case a := <-ch:
		return inTime(a), nil
	case <-t.C:
		select {
		case a := <-ch:
			return inTime(a), nil
		default:
			return answer{o: silent}, nil
		}
	case <-ctx.Done():
		return answer{}, ctx.Err()
	}
}

// localMTU is the MTU of the interface packets to dst leave from: the named
// one, else the one holding the source address the kernel picks for dst (a
// UDP socket connected there: nothing is sent). 0 if it cannot be had. It
// is a hint: a source address on another interface than the route's gives
// a wrong one, which the search's confirming probe catches.
func localMTU(dst, src netip.Addr, ifindex int) int {
	if ifindex != 0 {
		if ifi, err := net.InterfaceByIndex(ifindex); err == nil {
			return ifi.MTU
		}
		return 0
	}
	if !src.IsValid() {
		family := unix.AF_INET
		var sa unix.Sockaddr
		if dst.Is6() {
			family, sa = unix.AF_INET6, &unix.SockaddrInet6{Port: 9, Addr: dst.As16()}
		} else {
			sa = &unix.SockaddrInet4{Port: 9, Addr: dst.As4()}
		}
		fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return 0
		}
		defer unix.Close(fd)
		if unix.Connect(fd, sa) != nil {
			return 0
		}
		local, err := unix.Getsockname(fd)
		if err != nil {
			return 0
		}
		switch l := local.(type) {
		case *unix.SockaddrInet4:
			src = netip.AddrFrom4(l.Addr)
		case *unix.SockaddrInet6:
			src = netip.AddrFrom16(l.Addr)
		}
	}
	ifis, err := net.Interfaces()
	if err != nil {
		return 0
	}
	for _, ifi := range ifis {
		addrs, err := ifi.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if p, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(p.IP); ok && ip.Unmap() == src.Unmap() {
					return ifi.MTU
				}
			}
		}
	}
	return 0
}
