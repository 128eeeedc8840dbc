package events

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"
)

// Query limits.
const (
	DefaultLimit = 100
	MaxLimit     = 10000
)

// Query selects events. Zero fields select everything.
type Query struct {
	// Since and Until bound the event time (both inclusive).
	Since, Until time.Time
	// Kinds: any of these (empty: all).
	Kinds []Kind
	// Labels: every one must equal the event's label ("" matches an
	// unset label).
	Labels map[string]string
	// Limit: at most this many events, the newest (0: DefaultLimit).
	Limit int
	// Related: fill Related of anchor events.
	Related bool
}

// Match reports whether e passes the query's kind and label filters and time
// bounds (used by live streams too).
func (q *Query) Match(e *Event) bool {
	if !q.Since.IsZero() && e.Time.Before(q.Since) || !q.Until.IsZero() && e.Time.After(q.Until) {
		return false
	}
	if len(q.Kinds) > 0 && !slices.Contains(q.Kinds, e.Kind) {
		return false
	}
	for name, want := range q.Labels {
		if got, _ := e.Labels.Get(name); got != want {
			return false
		}
	}
	return true
}

func (q *Query) check() error {
	for _, k := range q.Kinds {
		if !k.Valid() {
			return fmt.Errorf("unknown kind %q", k)
		}
	}
	for name := range q.Labels {
		if _, ok := (Labels{}).Get(name); !ok {
			return fmt.Errorf("unknown label %q", name)
		}
	}
	if q.Limit < 0 || q.Limit > MaxLimit {
		return fmt.Errorf("limit must be between 1 and %d", MaxLimit)
	}
	return nil
}

// prefilter holds byte patterns a matching line must contain. They are exact
// renderings of the record encoding, so a line without them cannot match;
// a line with them is decoded and checked exactly.
type prefilter struct {
	since, until int64
	kinds        [][]byte // any of
	labels       [][]byte // all of
}

func newPrefilter(q *Query) prefilter {
	p := prefilter{since: minInt64, until: maxInt64}
	if !q.Since.IsZero() {
		p.since = q.Since.UnixNano()
	}
	if !q.Until.IsZero() {
		p.until = q.Until.UnixNano()
	}
	for _, k := range q.Kinds {
		p.kinds = append(p.kinds, jsonPair("kind", string(k)))
	}
	for name, v := range q.Labels {
		if v == "" {
			continue // unset labels are omitted: nothing to look for
		}
		p.labels = append(p.labels, jsonPair(name, v))
	}
	return p
}

const (
	minInt64 = -1 << 63
	maxInt64 = 1<<63 - 1
)

func jsonPair(name, value string) []byte {
	v, _ := json.Marshal(value)
	return append([]byte(`"`+name+`":`), v...)
}

func (p *prefilter) pass(line []byte, t int64) bool {
	if t < p.since || t > p.until {
		return false
	}
	if len(p.kinds) > 0 {
		ok := false
		for _, k := range p.kinds {
			if bytes.Contains(line, k) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	for _, l := range p.labels {
		if !bytes.Contains(line, l) {
			return false
		}
	}
	return true
}

// found is a decoded event with its place in the journal (to tell an anchor
// from the same event among its neighbours).
type found struct {
	Event
	seq uint64
	off int
}

type candidate struct {
	t        int64
	off, end int
}

func decode(line []byte) (Event, error) {
	var r record
	if err := json.Unmarshal(line, &r); err != nil {
		return Event{}, err
	}
	return Event{Time: time.Unix(0, r.T).UTC(), Kind: r.Kind, Summary: r.Summary, Labels: r.Labels, Details: r.Details}, nil
}

// Query returns the newest events matching q, newest first.
//
// Cost: segments are visited newest first and skipped by their time range;
// each visited segment is read whole (at most SegmentBytes), its lines are
// pre-filtered on their bytes (time prefix, kind and label patterns) and only
// the newest Limit candidates of it are decoded. The scan stops once Limit
// events are found and no older segment can hold a newer one.
func (j *Journal) Query(ctx context.Context, q Query) ([]Event, error) {
	if j == nil {
		return nil, nil
	}
	if err := q.check(); err != nil {
		return nil, err
	}
	if q.Limit == 0 {
		q.Limit = DefaultLimit
	}
	segs := j.snapshot()
	// Newest first by their newest event; events may be appended slightly
	// out of time order (a latency shift is stamped with its onset), so the
	// order is by maxT, not by file sequence.
	slices.SortFunc(segs, func(a, b segment) int { return cmp.Compare(b.maxT, a.maxT) })
	pf := newPrefilter(&q)
	var out []found
	rb := getBuf()
	defer putBuf(rb)
	var cands []candidate
	for _, s := range segs {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("querying events: %w", err)
		}
		if s.maxT < pf.since || s.minT > pf.until {
			continue
		}
		if len(out) >= q.Limit && s.maxT < out[q.Limit-1].Time.UnixNano() {
			break // nothing here is newer than what we have
		}
		buf, err := rb.read(s)
		if err != nil {
			return nil, err
		}
		cands = cands[:0]
		forLines(buf, func(line []byte, off int) {
			t, ok := lineTime(line)
			if ok && pf.pass(line, t) {
				cands = append(cands, candidate{t: t, off: off, end: off + len(line)})
			}
		})
		// Newest first; among equal times the later appended first.
		slices.SortFunc(cands, func(a, b candidate) int { return cmp.Or(cmp.Compare(b.t, a.t), cmp.Compare(b.off, a.off)) })
		took := 0
		for _, c := range cands {
			if took >= q.Limit {
				break
			}
			e, err := decode(buf[c.off:c.end])
			if err != nil || !q.Match(&e) {
				continue
			}
			out = append(out, found{Event: e, seq: s.seq, off: c.off})
			took++
		}
		slices.SortFunc(out, func(a, b found) int {
			return cmp.Or(b.Time.Compare(a.Time), cmp.Compare(b.seq, a.seq), cmp.Compare(b.off, a.off))
		})
		if len(out) > q.Limit {
			out = out[:q.Limit]
		}
	}
	if q.Related {
		if err := j.fillRelated(ctx, segs, out, rb); err != nil {
			return nil, err
		}
	}
	res := make([]Event, len(out))
	for i := range out {
		res[i] = out[i].Event
	}
	return res, nil
}

// Relates says whether b is "nearby" for anchor a, apart from time:
//
//   - agent events (start, stop, reload, AWS polling) relate to everything;
//   - two probe events relate when they are on the same pair (source_site
//     and target_site; any target, path, segment or protocol);
//   - a probe event and an AWS event relate when the AWS resource's site is
//     one of the pair's sites and their segments agree (either one empty
//     agrees with all), or when both name the same VIF;
//   - two AWS events relate when they name the same VIF or connection, or
//     the same site and agreeing segments.
func Relates(a, b *Event) bool {
	sa, sb := a.Kind.Scope(), b.Kind.Scope()
	if sa == ScopeAgent || sb == ScopeAgent {
		return true
	}
	la, lb := &a.Labels, &b.Labels
	if la.VIFID != "" && la.VIFID == lb.VIFID {
		return true
	}
	segOK := la.Segment == "" || lb.Segment == "" || la.Segment == lb.Segment
	switch {
	case sa == ScopeProbe && sb == ScopeProbe:
		return la.SourceSite == lb.SourceSite && la.TargetSite == lb.TargetSite
	case sa == ScopeProbe && sb == ScopeAWS:
		return lb.Site != "" && (lb.Site == la.SourceSite || lb.Site == la.TargetSite) && segOK
	case sa == ScopeAWS && sb == ScopeProbe:
		return la.Site != "" && (la.Site == lb.SourceSite || la.Site == lb.TargetSite) && segOK
	default:
		if la.ConnectionID != "" && la.ConnectionID == lb.ConnectionID {
			return true
		}
		return la.Site != "" && la.Site == lb.Site && segOK
	}
}

// fillRelated lists, for every anchor in out, the related events within
// RelatedWindow of it: one pass over the segments that overlap the anchors'
// windows, decoding only lines that fall in some window and carry a label
// some anchor could relate to (byte patterns, as for queries).
func (j *Journal) fillRelated(ctx context.Context, segs []segment, out []found, rb *readBuf) error {
	w := int64(j.o.RelatedWindow)
	var anchors []int
	for i := range out {
		if out[i].Kind.Anchor() {
			anchors = append(anchors, i)
		}
	}
	if len(anchors) == 0 {
		return nil
	}
	// Anchor times, sorted, to test "within w of some anchor" by binary
	// search.
	at := make([]int64, len(anchors))
	pats := relatedPatterns{}
	for i, a := range anchors {
		at[i] = out[a].Time.UnixNano()
		pats.add(&out[a].Event)
	}
	slices.Sort(at)
	lo, hi := at[0]-w, at[len(at)-1]+w
	near := func(t int64) bool {
		i := sort.Search(len(at), func(i int) bool { return at[i] >= t-w })
		return i < len(at) && at[i] <= t+w
	}
	var pool []found
	for _, s := range segs {
		if s.maxT < lo || s.minT > hi {
			continue
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("querying related events: %w", err)
		}
		buf, err := rb.read(s)
		if err != nil {
			return err
		}
		forLines(buf, func(line []byte, off int) {
			t, ok := lineTime(line)
			if !ok || !near(t) || !pats.any(line) {
				return
			}
			e, err := decode(line)
			if err != nil {
				return
			}
			pool = append(pool, found{Event: e, seq: s.seq, off: off})
		})
	}
	slices.SortFunc(pool, func(a, b found) int { return a.Time.Compare(b.Time) })
	type rel struct {
		f    *found
		dist int64
	}
	var rs []rel
	for _, ai := range anchors {
		a := &out[ai]
		ta := a.Time.UnixNano()
		rs = rs[:0]
		first := sort.Search(len(pool), func(i int) bool { return pool[i].Time.UnixNano() >= ta-w })
		for k := first; k < len(pool) && pool[k].Time.UnixNano() <= ta+w; k++ {
			c := &pool[k]
			if c.seq == a.seq && c.off == a.off {
				continue // the anchor itself
			}
			if !Relates(&a.Event, &c.Event) {
				continue
			}
			d := c.Time.UnixNano() - ta
			if d < 0 {
				d = -d
			}
			rs = append(rs, rel{c, d})
		}
		slices.SortStableFunc(rs, func(x, y rel) int { return cmp.Compare(x.dist, y.dist) })
		if len(rs) > j.o.MaxRelated {
			rs = rs[:j.o.MaxRelated]
		}
		a.Related = make([]Event, len(rs))
		for k, r := range rs {
			a.Related[k] = r.f.Event
		}
		slices.SortStableFunc(a.Related, func(x, y Event) int { return y.Time.Compare(x.Time) })
	}
	return nil
}

// relatedPatterns are the byte patterns of which a line must hold one to
// possibly relate to some anchor (see Relates): the anchor's pair, the
// sites of the pair as an AWS site, its VIF or connection, or an agent
// kind.
type relatedPatterns struct {
	seen map[string]bool
	pats [][]byte
}

func (p *relatedPatterns) addPat(b []byte) {
	if p.seen == nil {
		p.seen = map[string]bool{}
		for _, k := range Kinds() {
			if k.Scope() == ScopeAgent {
				p.addPat(jsonPair("kind", string(k)))
			}
		}
	}
	if !p.seen[string(b)] {
		p.seen[string(b)] = true
		p.pats = append(p.pats, b)
	}
}

func (p *relatedPatterns) add(a *Event) {
	l := &a.Labels
	if l.SourceSite != "" && l.TargetSite != "" {
		// source_site and target_site are adjacent in the encoding.
		p.addPat(append(append(jsonPair("source_site", l.SourceSite), ','), jsonPair("target_site", l.TargetSite)...))
	}
	for _, site := range []string{l.SourceSite, l.TargetSite, l.Site} {
		if site != "" {
			p.addPat(jsonPair("site", site))
		}
	}
	if l.VIFID != "" {
		p.addPat(jsonPair("vif_id", l.VIFID))
	}
	if l.ConnectionID != "" {
		p.addPat(jsonPair("connection_id", l.ConnectionID))
	}
}

func (p *relatedPatterns) any(line []byte) bool {
	for _, b := range p.pats {
		if bytes.Contains(line, b) {
			return true
		}
	}
	return false
}

// readBuf is a reusable buffer for reading segments; it remembers which
// segment it holds, so the related pass does not read the newest segment a
// second time.
type readBuf struct {
	b     []byte
	seq   uint64
	size  int64
	valid bool
}

var bufPool = sync.Pool{New: func() any { return new(readBuf) }}

func getBuf() *readBuf { return bufPool.Get().(*readBuf) }

func putBuf(rb *readBuf) {
	rb.valid = false
	bufPool.Put(rb)
}

func (rb *readBuf) read(s segment) ([]byte, error) {
	if rb.valid && rb.seq == s.seq && rb.size == s.size {
		return rb.b, nil
	}
	b, err := readSegment(s, rb.b)
	if err != nil {
		rb.valid = false
		return nil, err
	}
	rb.b, rb.seq, rb.size, rb.valid = b, s.seq, s.size, true
	return b, nil
}
