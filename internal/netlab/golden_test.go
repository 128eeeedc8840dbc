package netlab

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sort"
	"testing"
	"time"
)

// TestForwardGolden runs a fixed sequence of packets (both families, UDP
// and ICMP, TTLs that expire at each hop, oversized DF packets, loss,
// jitter with and without reordering, DSCP) through forward with a fixed
// seed and compares a digest of everything it queued (due time and bytes,
// on both sites) with the digest of the emulator before member paths
// existed: without Members, and with one member that adds nothing, it
// must behave byte for byte as before.
func TestForwardGolden(t *testing.T) {
	const want = "2f40be4a2be130a86ff44725beac7e14f9ad13412975577b64b31d0880eab91e {Packets:6400 Delivered:4360 Lost:490 Down:0 Blocked:0 MTUErrors:68 MTUDropped:85 TTLExpired:1397}"
	for _, members := range [][]MemberParams{nil, {{}}} {
		if got := forwardDigest(t, members); got != want {
			t.Errorf("members %v: forward changed:\n got %s\nwant %s", members, got, want)
		}
	}
}

func forwardDigest(t *testing.T, members []MemberParams) string {
	l := fakeLab(t)
	east, fra := l.sites[0], l.sites[1]
	src4, dst4 := netip.MustParseAddr("10.77.1.1"), netip.MustParseAddr("10.77.7.1")
	src6, dst6 := netip.MustParseAddr("fd77:1::1"), netip.MustParseAddr("fd77:7::1")
	hops := DefaultTopology().Links[LinkKey{"us-east", "eu-frankfurt", PathSiteLink}].Hops
	ef := uint8(46)
	rng := rand.New(rand.NewPCG(42, 7))
	d := sha256.New()
	dump := func() {
		for _, s := range []*siteRT{east, fra} {
			q := s.out
			q.mu.Lock()
			for _, p := range popAll(q) {
				var b [8]byte
				binary.BigEndian.PutUint64(b[:], uint64(p.due))
				d.Write(b[:])
				d.Write(p.b)
			}
			q.mu.Unlock()
		}
	}
	for i, p := range []PathParams{
		{Delay: 40 * time.Millisecond, Hops: hops},
		{Delay: 40 * time.Millisecond, Hops: hops, Loss: 0.3, Jitter: 3 * time.Millisecond},
		{Delay: 10 * time.Millisecond, Jitter: 5 * time.Millisecond, Reorder: true, DSCP: &ef, MTU: 1400, Hops: hops[:2]},
		{Delay: 10 * time.Millisecond, MTU: 1400, MTUBlackhole: true},
	} {
		p.Members = members
		if err := l.SetPath("us-east", "eu-frankfurt", PathSiteLink, p); err != nil {
			t.Fatal(err)
		}
		if err := l.SetPath("eu-frankfurt", "us-east", PathSiteLink, PathParams{Delay: time.Duration(i+3) * time.Millisecond}); err != nil {
			t.Fatal(err)
		}
		for n := range 400 {
			ttl := 1 + n%5
			size := 40 + (n*37)%1500
			now := int64(n) * int64(100*time.Microsecond)
			l.forward(east, rng, udp4(src4, dst4, uint16(33000+n%16), 33434, ttl, size), now)
			l.forward(east, rng, udp6(src6, dst6, uint16(33000+n%16), 33434, ttl, size), now+1)
			l.forward(east, rng, echo4(src4, dst4, uint16(n%7), uint16(n), ttl, 56), now+2)
			l.forward(east, rng, echo6(src6, dst6, uint16(n%7), uint16(n), ttl, 56), now+3)
		}
		dump()
	}
	st, _ := l.Stats("us-east", "eu-frankfurt", PathSiteLink)
	return fmt.Sprintf("%x %+v", d.Sum(nil), st)
}

func popAll(q *outQueue) []queuedPacket {
	ps := append([]queuedPacket(nil), q.h...)
	// Smallest (due, seq) first, as the output thread writes them.
	sort.Slice(ps, func(i, j int) bool { return pktHeap(ps).less(i, j) })
	q.h = q.h[:0]
	return ps
}
