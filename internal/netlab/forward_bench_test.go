package netlab

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"
)

// fakeLab is a two-site lab (us-east, eu-frankfurt) without namespaces or
// threads: enough to run forward, the emulator's per-packet decision, and
// look at what it queued. No root needed.
func fakeLab(b testing.TB) *Lab {
	b.Helper()
	topo, err := DefaultTopology().Subset("us-east", "eu-frankfurt")
	if err != nil {
		b.Fatal(err)
	}
	l := &Lab{topo: topo, clock: clock{epoch: time.Now()}, byName: map[string]*siteRT{}, addrs: map[netip.Addr]addrRef{}, done: make(chan struct{})}
	if err := l.index(); err != nil {
		b.Fatal(err)
	}
	empty := map[blockKey]struct{}{}
	l.blocked.Store(&empty)
	for _, s := range l.sites {
		q, err := newOutQueue(-1, &l.clock, &l.errs)
		if err != nil {
			b.Fatal(err)
		}
		s.out = q
		b.Cleanup(q.close)
	}
	return l
}

// udp4 is an IPv4 UDP datagram from src:sport to dst:dport.
func udp4(src, dst netip.Addr, sport, dport uint16, ttl, payload int) []byte {
	p := make([]byte, 20+8+payload)
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	p[6] = 0x40
	p[8] = byte(ttl)
	p[9] = 17
	s, d := src.As4(), dst.As4()
	copy(p[12:], s[:])
	copy(p[16:], d[:])
	fixIPv4Checksum(p, 20)
	binary.BigEndian.PutUint16(p[20:], sport)
	binary.BigEndian.PutUint16(p[22:], dport)
	binary.BigEndian.PutUint16(p[24:], uint16(8+payload))
	return p
}

// benchForward measures forward for one 64-byte datagram per op, source
// ports cycling over 64 flows, on the us-east -> eu-frankfurt sitelink
// path with parameters p.
func benchForward(b *testing.B, p PathParams) {
	l := fakeLab(b)
	if err := l.SetPath("us-east", "eu-frankfurt", PathSiteLink, p); err != nil {
		b.Fatal(err)
	}
	src, dst := netip.MustParseAddr("10.77.1.1"), netip.MustParseAddr("10.77.7.1")
	var pkts [64][]byte
	for i := range pkts {
		pkts[i] = udp4(src, dst, uint16(40000+i), 9000, 64, 36)
	}
	s := l.sites[0]
	q := l.sites[1].out
	rng := rand.New(rand.NewPCG(1, 2))
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		l.forward(s, rng, pkts[i%len(pkts)], int64(i))
		if i%4096 == 4095 {
			b.StopTimer()
			q.mu.Lock()
			for _, qp := range q.h {
				pktFree(qp.b) // as the output thread does once it wrote them
			}
			q.h = q.h[:0]
			q.mu.Unlock()
			b.StartTimer()
		}
	}
}

// BenchmarkForward is the emulator's per-packet cost (parse, choose the
// path, loss draw, copy, queue) without the TUN read and write.
func BenchmarkForward(b *testing.B) {
	hops := DefaultTopology().Links[LinkKey{"us-east", "eu-frankfurt", PathSiteLink}].Hops
	b.Run("plain", func(b *testing.B) {
		benchForward(b, PathParams{Delay: 40 * time.Millisecond, Hops: hops})
	})
	b.Run("loss", func(b *testing.B) {
		benchForward(b, PathParams{Delay: 40 * time.Millisecond, Hops: hops, Loss: 0.01})
	})
	b.Run("members=4", func(b *testing.B) {
		p := PathParams{Delay: 40 * time.Millisecond, Hops: hops}
		for i := range 4 {
			p.Members = append(p.Members, MemberParams{Delay: time.Duration(i) * time.Millisecond, Loss: 0.01,
				Hops: []netip.Addr{hops[0], netip.AddrFrom4([4]byte{10, 90, 17, byte(10 + i)}), hops[2]}})
		}
		benchForward(b, p)
	})
}
