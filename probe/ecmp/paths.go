package ecmp

import (
	"net/netip"
	"slices"
)

// Trace is one Paris traceroute of one flow: Hops[i] is the address that
// answered TTL i+1, the zero Addr where nothing answered (a silent hop,
// "*"). Reached says the trace ended at the target, so the path has no
// hops beyond the last.
type Trace struct {
	Flow    int
	Hops    []netip.Addr
	Reached bool
}

// MemberPath is one distinct path found among the traces, and the flows
// whose traces follow it.
type MemberPath struct {
	// Hops merges the traces of the path: a hop silent in one trace is
	// filled in from another trace of the same path; still zero where no
	// trace of the path got an answer.
	Hops    []netip.Addr
	Reached bool
	Flows   []int // sorted
}

// PathSet is what GroupPaths found.
type PathSet struct {
	Paths []MemberPath
	// Ambiguous are flows whose trace fits more than one path (too many
	// silent hops to tell), or has no answering hop at all; they are in no
	// path.
	Ambiguous []int
}

// PathOf returns the index in Paths of the path of flow f, or -1.
func (ps PathSet) PathOf(f int) int {
	for i, p := range ps.Paths {
		if slices.Contains(p.Flows, f) {
			return i
		}
	}
	return -1
}

// compatible says whether two hop lists can be the same path: every TTL
// where both answered answered from the same address, and neither goes on
// (with an answering hop) past the end of one that reached the target.
func compatible(a []netip.Addr, aReached bool, b []netip.Addr, bReached bool) bool {
	if aReached && bReached && len(a) != len(b) {
		return false
	}
	for i := range max(len(a), len(b)) {
		var x, y netip.Addr
		if i < len(a) {
			x = a[i]
		} else if aReached && b[i].IsValid() {
			return false
		}
		if i < len(b) {
			y = b[i]
		} else if bReached && a[i].IsValid() {
			return false
		}
		if x.IsValid() && y.IsValid() && x != y {
			return false
		}
	}
	return true
}

func known(hops []netip.Addr) int {
	n := 0
	for _, h := range hops {
		if h.IsValid() {
			n++
		}
	}
	return n
}

// GroupPaths groups the traces of several flows of one target into the
// distinct member paths. A silent hop is no evidence either way (routers
// rate-limit ICMP), so two traces are the same path when they never
// disagree where both answered. The traces with the most answering hops
// are placed first; a trace that fits two different paths is ambiguous,
// not guessed. Paths are ordered by their first flow.
//
// Member paths that differ only below layer 3 (the links of a LAG, or
// ECMP between the same two routers) have the same hop list: they are one
// path here, however many members carry it.
func GroupPaths(traces []Trace) PathSet {
	order := make([]int, len(traces))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return known(traces[b].Hops) - known(traces[a].Hops) })
	var ps PathSet
	for _, ti := range order {
		tr := traces[ti]
		if known(tr.Hops) == 0 {
			ps.Ambiguous = append(ps.Ambiguous, tr.Flow)
			continue
		}
		match := -1
		ambiguous := false
		for i, p := range ps.Paths {
			if compatible(p.Hops, p.Reached, tr.Hops, tr.Reached) {
				if match >= 0 {
					ambiguous = true
					break
				}
				match = i
			}
		}
		switch {
		case ambiguous:
			ps.Ambiguous = append(ps.Ambiguous, tr.Flow)
		case match < 0:
			ps.Paths = append(ps.Paths, MemberPath{Hops: slices.Clone(tr.Hops), Reached: tr.Reached, Flows: []int{tr.Flow}})
		default:
			p := &ps.Paths[match]
			p.Hops = merge(p.Hops, p.Reached, tr.Hops, tr.Reached)
			p.Reached = p.Reached || tr.Reached
			p.Flows = append(p.Flows, tr.Flow)
		}
	}
	for i := range ps.Paths {
		slices.Sort(ps.Paths[i].Flows)
	}
	slices.SortFunc(ps.Paths, func(a, b MemberPath) int { return a.Flows[0] - b.Flows[0] })
	slices.Sort(ps.Ambiguous)
	return ps
}

// merge fills the silent hops of a with those of b (two compatible hop
// lists of one path). The length is that of a list that reached the
// target (beyond it the other has only silent hops), else the longer.
func merge(a []netip.Addr, aReached bool, b []netip.Addr, bReached bool) []netip.Addr {
	n := max(len(a), len(b))
	switch {
	case aReached:
		n = len(a)
	case bReached:
		n = len(b)
	}
	out := make([]netip.Addr, n)
	for i := range out {
		if i < len(a) {
			out[i] = a[i]
		}
		if !out[i].IsValid() && i < len(b) {
			out[i] = b[i]
		}
	}
	return out
}

// Divergence is where two paths part.
type Divergence struct {
	// Found is false when the paths never disagree where both answered.
	Found bool
	// TTL is the first hop (1-based) where both answered from different
	// addresses; A and B are those addresses (A of the first path).
	TTL  int
	A, B netip.Addr
	// After is the last TTL before it where both answered from the same
	// address (0: none). With silent hops between, the paths parted
	// somewhere after After and at or before TTL.
	After int
}

// Diverge compares two hop lists (of a lossy and a healthy flow, say)
// TTL by TTL.
func Diverge(a, b []netip.Addr) Divergence {
	var d Divergence
	for i := range min(len(a), len(b)) {
		x, y := a[i], b[i]
		if !x.IsValid() || !y.IsValid() {
			continue
		}
		if x != y {
			d.Found, d.TTL, d.A, d.B = true, i+1, x, y
			return d
		}
		d.After = i + 1
	}
	return d
}

// Suspect is the hop SuspectHop names.
type Suspect struct {
	// Found is false when every answering hop of the lossy path is also
	// on a healthy path: the fault is below layer 3 (a LAG member, a link
	// between two routers both paths use) or on a silent hop.
	Found bool
	// TTL and Addr: the first hop of the lossy path that no healthy path
	// has.
	TTL  int
	Addr netip.Addr
	// Prev is the last answering hop before it that a healthy path shares
	// (zero when none): the lossy path leaves the healthy ones between
	// Prev and Addr.
	Prev netip.Addr
}

// SuspectHop names the first hop of a lossy member path that none of the
// healthy member paths goes through: where the lossy path leaves them.
// Hops are compared as sets, not by TTL, so healthy paths of other
// lengths count too; silent hops are skipped.
func SuspectHop(lossy []netip.Addr, healthy [][]netip.Addr) Suspect {
	seen := map[netip.Addr]bool{}
	for _, h := range healthy {
		for _, a := range h {
			if a.IsValid() {
				seen[a] = true
			}
		}
	}
	var s Suspect
	for i, a := range lossy {
		if !a.IsValid() {
			continue
		}
		if !seen[a] {
			s.Found, s.TTL, s.Addr = true, i+1, a
			return s
		}
		s.Prev = a
	}
	s.Prev = netip.Addr{}
	return s
}

// PathVerdict is the attribution of one member path.
type PathVerdict struct {
	Path           int   // index into PathSet.Paths
	Lossy, Healthy []int // its flows, by the loss verdict
	// Suspect is set for a path whose flows are all lossy: its first hop
	// that no path of healthy flows has.
	Suspect Suspect
	// Mixed: the path carries lossy and healthy flows, so what sets the
	// lossy ones apart is not visible in the hop list (a LAG member, or a
	// hash below layer 3).
	Mixed bool
}

// Attribute combines a loss verdict (the lossy flows, e.g.
// Verdict.Lossy) with the member paths of the traced flows: for each path,
// which of its flows are lossy, and, for a path whose flows are all lossy,
// the suspect hop against the paths whose flows are all healthy.
func Attribute(lossy []int, ps PathSet) []PathVerdict {
	isLossy := map[int]bool{}
	for _, f := range lossy {
		isLossy[f] = true
	}
	out := make([]PathVerdict, len(ps.Paths))
	var healthy [][]netip.Addr
	for i, p := range ps.Paths {
		out[i].Path = i
		for _, f := range p.Flows {
			if isLossy[f] {
				out[i].Lossy = append(out[i].Lossy, f)
			} else {
				out[i].Healthy = append(out[i].Healthy, f)
			}
		}
		out[i].Mixed = len(out[i].Lossy) > 0 && len(out[i].Healthy) > 0
		if len(out[i].Lossy) == 0 {
			healthy = append(healthy, p.Hops)
		}
	}
	for i, p := range ps.Paths {
		if len(out[i].Lossy) > 0 && !out[i].Mixed {
			out[i].Suspect = SuspectHop(p.Hops, healthy)
		}
	}
	return out
}
