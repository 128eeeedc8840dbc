package ecmp

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
)

func hops(s ...string) []netip.Addr {
	out := make([]netip.Addr, len(s))
	for i, a := range s {
		if a != "*" {
			out[i] = netip.MustParseAddr(a)
		}
	}
	return out
}

// fourMembers are the traces of 12 flows over 4 member paths that part at
// hop 2 (10.90.17.1x) and join again at hop 3, as in the lab's
// memberPath; some hops are silent.
func fourMembers() []Trace {
	member := func(m int, silent ...int) []netip.Addr {
		h := hops("10.90.17.1", fmt.Sprintf("10.90.17.1%d", m), "10.90.17.3", "10.77.7.1")
		for _, s := range silent {
			h[s] = netip.Addr{}
		}
		return h
	}
	return []Trace{
		{Flow: 0, Hops: member(2), Reached: true},
		{Flow: 1, Hops: member(0), Reached: true},
		{Flow: 2, Hops: member(3, 0), Reached: true},
		{Flow: 3, Hops: member(1), Reached: true},
		{Flow: 4, Hops: member(2, 2), Reached: true},
		{Flow: 5, Hops: member(0, 0, 2), Reached: true},
		{Flow: 6, Hops: member(3), Reached: true},
		{Flow: 7, Hops: member(1, 3)[:3], Reached: false}, // the target did not answer this round
		{Flow: 8, Hops: member(2), Reached: true},
		{Flow: 9, Hops: member(0, 1), Reached: true},               // silent where members differ: fits all four
		{Flow: 10, Hops: hops("*", "*", "*", "*"), Reached: false}, // nothing answered
		{Flow: 11, Hops: member(1), Reached: true},
	}
}

func TestGroupPaths(t *testing.T) {
	ps := GroupPaths(fourMembers())
	var got [][]int
	for _, p := range ps.Paths {
		got = append(got, p.Flows)
	}
	want := [][]int{{0, 4, 8}, {1, 5}, {2, 6}, {3, 7, 11}}
	if fmt.Sprint(got) != fmt.Sprint(want) || !slices.Equal(ps.Ambiguous, []int{9, 10}) {
		t.Fatalf("paths %v ambiguous %v, want %v and [9 10]", got, ps.Ambiguous, want)
	}
	// Silent hops are filled from the other traces of the same path.
	for i, p := range ps.Paths {
		if known(p.Hops) != 4 || !p.Reached {
			t.Errorf("path %d: hops %v reached %v, want all four hops known", i, p.Hops, p.Reached)
		}
	}
	if ps.PathOf(7) != 3 || ps.PathOf(9) != -1 {
		t.Errorf("PathOf(7) = %d, PathOf(9) = %d", ps.PathOf(7), ps.PathOf(9))
	}
	// A LAG: the members share every router, so one path.
	lag := GroupPaths([]Trace{{Flow: 0, Hops: hops("10.0.0.1", "10.0.0.2"), Reached: true}, {Flow: 1, Hops: hops("10.0.0.1", "10.0.0.2"), Reached: true}})
	if len(lag.Paths) != 1 || !slices.Equal(lag.Paths[0].Flows, []int{0, 1}) {
		t.Errorf("LAG: %+v", lag)
	}
	// Paths of different lengths that agree on a prefix are different
	// when both reached the target.
	diff := GroupPaths([]Trace{{Flow: 0, Hops: hops("10.0.0.1", "10.0.0.9"), Reached: true}, {Flow: 1, Hops: hops("10.0.0.1", "10.0.0.5", "10.0.0.9"), Reached: true}})
	if len(diff.Paths) != 2 {
		t.Errorf("two lengths: %+v", diff)
	}
	// An unreached trace with an answering hop past a reached path's end
	// is another path.
	longer := GroupPaths([]Trace{{Flow: 0, Hops: hops("10.0.0.1", "10.0.0.9"), Reached: true}, {Flow: 1, Hops: hops("10.0.0.1", "*", "10.0.0.7")}})
	if len(longer.Paths) != 2 {
		t.Errorf("longer unreached: %+v", longer)
	}
	// And one that only adds silence is the same path, keeping its length.
	same := GroupPaths([]Trace{{Flow: 0, Hops: hops("10.0.0.1", "10.0.0.9"), Reached: true}, {Flow: 1, Hops: hops("10.0.0.1", "*", "*", "*")}})
	if len(same.Paths) != 1 || len(same.Paths[0].Hops) != 2 {
		t.Errorf("trailing silence: %+v", same)
	}
}

func TestDivergeAndSuspect(t *testing.T) {
	ps := GroupPaths(fourMembers())
	lossy := ps.Paths[0].Hops // member 2
	d := Diverge(lossy, ps.Paths[1].Hops)
	if !d.Found || d.TTL != 2 || d.A != netip.MustParseAddr("10.90.17.12") || d.B != netip.MustParseAddr("10.90.17.10") || d.After != 1 {
		t.Errorf("diverge: %+v", d)
	}
	// A silent hop before the difference widens the interval.
	d = Diverge(hops("10.0.0.1", "*", "10.0.0.3"), hops("10.0.0.1", "10.0.0.2", "10.0.0.4"))
	if !d.Found || d.TTL != 3 || d.After != 1 {
		t.Errorf("diverge after a silent hop: %+v", d)
	}
	if d := Diverge(hops("10.0.0.1", "*"), hops("10.0.0.1", "10.0.0.2")); d.Found || d.After != 1 {
		t.Errorf("no difference: %+v", d)
	}
	var healthy [][]netip.Addr
	for _, p := range ps.Paths[1:] {
		healthy = append(healthy, p.Hops)
	}
	s := SuspectHop(lossy, healthy)
	if !s.Found || s.TTL != 2 || s.Addr != netip.MustParseAddr("10.90.17.12") || s.Prev != netip.MustParseAddr("10.90.17.1") {
		t.Errorf("suspect: %+v", s)
	}
	if s := SuspectHop(ps.Paths[1].Hops, [][]netip.Addr{ps.Paths[1].Hops}); s.Found {
		t.Errorf("same path: %+v", s)
	}
}

func TestAttribute(t *testing.T) {
	ps := GroupPaths(fourMembers())
	// Flows 0, 4, 8 (member 2) are lossy.
	av := Attribute([]int{0, 4, 8}, ps)
	if len(av) != 4 {
		t.Fatalf("%d verdicts", len(av))
	}
	if !slices.Equal(av[0].Lossy, []int{0, 4, 8}) || av[0].Mixed || !av[0].Suspect.Found || av[0].Suspect.Addr != netip.MustParseAddr("10.90.17.12") {
		t.Errorf("lossy path: %+v", av[0])
	}
	for _, v := range av[1:] {
		if len(v.Lossy) != 0 || v.Suspect.Found {
			t.Errorf("healthy path: %+v", v)
		}
	}
	// A LAG hides the member: the path carries lossy and healthy flows.
	av = Attribute([]int{0, 8}, ps)
	if !av[0].Mixed || av[0].Suspect.Found {
		t.Errorf("mixed path: %+v", av[0])
	}
}
