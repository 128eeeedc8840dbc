package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Defaults of Options.
const (
	DefaultRetention     = 30 * 24 * time.Hour
	DefaultMaxBytes      = 256 << 20
	DefaultSegmentBytes  = 4 << 20
	DefaultSegmentSpan   = 24 * time.Hour
	DefaultRelatedWindow = 10 * time.Minute
	DefaultMaxRelated    = 50
)

// Options configure a Journal. Zero values take the defaults.
type Options struct {
	// Dir holds the segment files; the daemon passes
	// <--storage.path>/events. It is created if missing.
	Dir string
	// Retention: segments whose newest event is older are deleted.
	Retention time.Duration
	// MaxBytes caps the segment files together; the oldest segments go
	// first.
	MaxBytes int64
	// SegmentBytes: a new segment is started before one would grow past
	// this. Capped to MaxBytes/4 so dropping the oldest segment never
	// drops more than a quarter of the journal.
	SegmentBytes int64
	// SegmentSpan: a new segment is started once the active one holds
	// events further apart than this, so age retention frees space in
	// steps of at most a span.
	SegmentSpan time.Duration
	// RelatedWindow: an anchor event lists the related events at most
	// this far before or after it.
	RelatedWindow time.Duration
	// MaxRelated: at most this many related events per anchor (the
	// nearest in time).
	MaxRelated int
	// Registerer gets probed_events_total and the journal's own series
	// (nil: not registered).
	Registerer prometheus.Registerer
	Logger     *zap.Logger
	// Now is the clock (tests); nil is time.Now.
	Now func() time.Time
}

func (o *Options) defaults() {
	if o.Retention <= 0 {
		o.Retention = DefaultRetention
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.SegmentBytes <= 0 {
		o.SegmentBytes = DefaultSegmentBytes
	}
	if o.SegmentBytes > o.MaxBytes/4 {
		o.SegmentBytes = max(o.MaxBytes/4, 4096)
	}
	if o.SegmentSpan <= 0 {
		o.SegmentSpan = min(DefaultSegmentSpan, o.Retention/4)
	}
	if o.RelatedWindow <= 0 {
		o.RelatedWindow = DefaultRelatedWindow
	}
	if o.MaxRelated <= 0 {
		o.MaxRelated = DefaultMaxRelated
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// segment is what the journal keeps in memory per file: about 100 bytes,
// whatever the number of events in it.
type segment struct {
	seq        uint64
	path       string
	size       int64
	count      int
	minT, maxT int64 // unix nanoseconds; valid when count > 0
}

// Journal is the append-only event store. Events are appended to the active
// segment file with one write(2) each (so a SIGKILL loses at most the write
// in progress) and fsynced when a segment is finished and on Close.
// Queries scan the segment files; only per-segment metadata stays in memory.
// All methods are safe for concurrent use, and no-ops on a nil *Journal so
// an agent without storage can run unchanged.
type Journal struct {
	o Options

	lock *os.File // holds the directory's flock while open

	mu            sync.Mutex
	segs          []*segment // oldest first; the last is the active one
	active        *os.File   // nil until the first append after opening or a retention pass
	closed        bool
	lastRetention time.Time

	subMu sync.Mutex
	subs  map[*subscriber]struct{}

	total    *prometheus.CounterVec
	failures prometheus.Counter
}

const segSuffix = ".jsonl"

// Open opens (or creates) the journal in o.Dir, checks every segment and
// cuts off a torn last line left by a crash.
func Open(o Options) (*Journal, error) {
	o.defaults()
	if o.Dir == "" {
		return nil, errors.New("opening event journal: no directory")
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating event journal directory: %w", err)
	}
	lock, err := lockDir(o.Dir)
	if err != nil {
		return nil, err
	}
	j := &Journal{o: o, subs: map[*subscriber]struct{}{}, lock: lock}
	ok := false
	defer func() {
		if !ok {
			lock.Close()
		}
	}()
	entries, err := os.ReadDir(o.Dir)
	if err != nil {
		return nil, fmt.Errorf("reading event journal directory: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, segSuffix) {
			continue
		}
		seq, err := strconv.ParseUint(strings.TrimSuffix(name, segSuffix), 10, 64)
		if err != nil {
			continue // not ours
		}
		j.segs = append(j.segs, &segment{seq: seq, path: filepath.Join(o.Dir, name)})
	}
	slices.SortFunc(j.segs, func(a, b *segment) int { return cmpU64(a.seq, b.seq) })
	for i, s := range j.segs {
		if err := j.loadSegment(s, i == len(j.segs)-1); err != nil {
			return nil, err
		}
	}
	j.registerMetrics()
	j.mu.Lock()
	j.retain()
	j.mu.Unlock()
	ok = true
	return j, nil
}

// lockName is the lock file in the journal's directory: one process at a
// time appends to a journal (two agents started with the same
// --storage.path would interleave their segments).
const lockName = "lock"

// lockDir takes an exclusive lock on dir's lock file (flock: released by
// the kernel when the process dies, so a SIGKILL leaves no stale lock).
func lockDir(dir string) (*os.File, error) {
	p := filepath.Join(dir, lockName)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening event journal lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("event journal %s is in use by another process (another probed with the same --storage.path?)", dir)
		}
		return nil, fmt.Errorf("locking event journal %s: %w", dir, err)
	}
	return f, nil
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// loadSegment reads a segment's metadata. The last segment is the only one
// that can end in a torn write; it is truncated to its last whole line.
func (j *Journal) loadSegment(s *segment, last bool) error {
	b, err := os.ReadFile(s.path)
	if err != nil {
		return fmt.Errorf("reading event segment %s: %w", s.path, err)
	}
	good := bytes.LastIndexByte(b, '\n') + 1
	if good < len(b) {
		if !last {
			j.o.Logger.Warn("event segment ends without a newline; the tail is ignored", zap.String("file", s.path))
		} else {
			j.o.Logger.Warn("event journal: dropping a torn last write", zap.String("file", s.path), zap.Int("bytes", len(b)-good))
			if err := os.Truncate(s.path, int64(good)); err != nil {
				return fmt.Errorf("truncating torn event segment %s: %w", s.path, err)
			}
		}
	}
	s.size = int64(good)
	forLines(b[:good], func(line []byte, _ int) {
		t, ok := lineTime(line)
		if !ok {
			return
		}
		s.note(t)
	})
	return nil
}

func (s *segment) note(t int64) {
	if s.count == 0 || t < s.minT {
		s.minT = t
	}
	if s.count == 0 || t > s.maxT {
		s.maxT = t
	}
	s.count++
}

// forLines calls f for every newline-terminated line of b with its offset.
func forLines(b []byte, f func(line []byte, off int)) {
	off := 0
	for off < len(b) {
		n := bytes.IndexByte(b[off:], '\n')
		if n < 0 {
			return
		}
		f(b[off:off+n], off)
		off += n + 1
	}
}

var timePrefix = []byte(`{"t":`)

// lineTime reads the event time of a record line without decoding it.
func lineTime(line []byte) (int64, bool) {
	if !bytes.HasPrefix(line, timePrefix) {
		return 0, false
	}
	rest := line[len(timePrefix):]
	i := 0
	neg := false
	if i < len(rest) && rest[i] == '-' {
		neg = true
		i++
	}
	var v int64
	start := i
	for ; i < len(rest) && rest[i] >= '0' && rest[i] <= '9'; i++ {
		v = v*10 + int64(rest[i]-'0')
	}
	if i == start || i >= len(rest) || rest[i] != ',' {
		return 0, false
	}
	if neg {
		v = -v
	}
	return v, true
}

// Emit appends an event, counts it and sends it to live streams. A zero Time
// is taken as now. It costs one write(2) (no fsync): emitters call it on
// transitions, never per probe. Failures are logged and counted in
// probed_events_write_failures_total; the event still reaches live streams.
func (j *Journal) Emit(e Event) {
	if j == nil {
		return
	}
	if !e.Kind.Valid() {
		j.o.Logger.Error("event of unknown kind dropped (a bug in its emitter)", zap.String("kind", string(e.Kind)))
		return
	}
	if e.Time.IsZero() {
		e.Time = j.o.Now()
	}
	e.Related = nil
	line, err := json.Marshal(record{T: e.Time.UnixNano(), Kind: e.Kind, Summary: e.Summary, Labels: e.Labels, Details: e.Details})
	if err != nil {
		j.fail("encoding event", err)
		return
	}
	line = append(line, '\n')
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		j.o.Logger.Debug("event after the journal closed", zap.String("kind", string(e.Kind)), zap.String("summary", e.Summary))
		return
	}
	err = j.append(line, e.Time.UnixNano())
	j.mu.Unlock()
	if err != nil {
		j.fail("writing event", err)
	}
	if j.total != nil {
		j.total.WithLabelValues(string(e.Kind)).Inc()
	}
	j.publish(e)
}

func (j *Journal) fail(what string, err error) {
	if j.failures != nil {
		j.failures.Inc()
	}
	j.o.Logger.Error("event journal: "+what, zap.Error(err))
}

// append writes one line to the active segment, starting a new one when
// the active one is full or spans too long. j.mu is held.
func (j *Journal) append(line []byte, t int64) error {
	var cur *segment
	if n := len(j.segs); n > 0 {
		cur = j.segs[n-1]
	}
	cut := cur == nil ||
		(cur.count > 0 && cur.size+int64(len(line)) > j.o.SegmentBytes) ||
		(cur.count > 0 && (t-cur.minT > int64(j.o.SegmentSpan) || cur.maxT-t > int64(j.o.SegmentSpan)))
	if cut {
		if err := j.cut(); err != nil {
			return err
		}
		cur = j.segs[len(j.segs)-1]
		j.retain()
	} else if j.active == nil {
		f, err := os.OpenFile(cur.path, os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return fmt.Errorf("opening event segment %s: %w", cur.path, err)
		}
		j.active = f
	}
	n, err := j.active.Write(line)
	if err != nil {
		// A short write leaves a partial line; cut it off so the next
		// line starts clean.
		if n > 0 {
			_ = j.active.Truncate(cur.size)
		}
		return fmt.Errorf("appending to %s: %w", cur.path, err)
	}
	cur.size += int64(n)
	cur.note(t)
	if now := j.o.Now(); now.Sub(j.lastRetention) > time.Minute {
		j.retain()
	}
	return nil
}

// cut finishes the active segment (fsync) and creates the next. j.mu is held.
func (j *Journal) cut() error {
	if j.active != nil {
		err := j.active.Sync()
		if cerr := j.active.Close(); err == nil {
			err = cerr
		}
		j.active = nil
		if err != nil {
			j.fail("finishing segment", err)
		}
	}
	var seq uint64 = 1
	if n := len(j.segs); n > 0 {
		seq = j.segs[n-1].seq + 1
	}
	p := filepath.Join(j.o.Dir, fmt.Sprintf("%010d%s", seq, segSuffix))
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("creating event segment: %w", err)
	}
	// Make the new file's name durable, so an fsync of its data later is
	// enough for it to survive a power loss.
	if d, err := os.Open(j.o.Dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	j.active = f
	j.segs = append(j.segs, &segment{seq: seq, path: p})
	return nil
}

// retain deletes segments beyond the size cap or the retention. The active
// segment is only deleted when everything in it is past retention. j.mu is
// held.
func (j *Journal) retain() {
	now := j.o.Now()
	j.lastRetention = now
	oldest := now.Add(-j.o.Retention).UnixNano()
	// The active segment may still grow to SegmentBytes: room is made for
	// that in advance, so the files never exceed MaxBytes together.
	var total int64
	for _, s := range j.segs {
		total += s.size
	}
	if n := len(j.segs); n > 0 {
		total += max(0, j.o.SegmentBytes-j.segs[n-1].size)
	}
	for len(j.segs) > 0 {
		s := j.segs[0]
		isActive := len(j.segs) == 1
		expired := s.count > 0 && s.maxT < oldest
		tooBig := total > j.o.MaxBytes && !isActive
		if !expired && !tooBig && !(s.count == 0 && !isActive) {
			break
		}
		if isActive && j.active != nil {
			_ = j.active.Close()
			j.active = nil
		}
		if err := os.Remove(s.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			j.fail("deleting old segment", err)
			break
		}
		total -= s.size
		j.segs = j.segs[1:]
	}
}

// Close flushes the active segment to disk and ends live streams. Events
// emitted afterwards are dropped.
func (j *Journal) Close() error {
	if j == nil {
		return nil
	}
	j.mu.Lock()
	var err error
	if !j.closed {
		j.closed = true
		if j.active != nil {
			err = j.active.Sync()
			if cerr := j.active.Close(); err == nil {
				err = cerr
			}
			j.active = nil
		}
		if j.lock != nil {
			_ = j.lock.Close() // releases the flock
			j.lock = nil
		}
	}
	j.mu.Unlock()
	j.closeStreams()
	if err != nil {
		return fmt.Errorf("closing event journal: %w", err)
	}
	return nil
}

// Stats describe the journal's storage.
type Stats struct {
	Segments int
	Events   int
	Bytes    int64
	Oldest   time.Time
	Newest   time.Time
}

// Stats returns the journal's size now.
func (j *Journal) Stats() Stats {
	var st Stats
	if j == nil {
		return st
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, s := range j.segs {
		st.Segments++
		st.Bytes += s.size
		if s.count == 0 {
			continue
		}
		if st.Events == 0 || s.minT < st.Oldest.UnixNano() {
			st.Oldest = time.Unix(0, s.minT)
		}
		if st.Events == 0 || s.maxT > st.Newest.UnixNano() {
			st.Newest = time.Unix(0, s.maxT)
		}
		st.Events += s.count
	}
	return st
}

// snapshot copies the segment metadata for a query.
func (j *Journal) snapshot() []segment {
	j.mu.Lock()
	defer j.mu.Unlock()
	out := make([]segment, 0, len(j.segs))
	for _, s := range j.segs {
		if s.count > 0 {
			out = append(out, *s)
		}
	}
	return out
}

// readSegment reads the first s.size bytes of a segment (the active one may
// have grown since the snapshot; only whole lines up to size are read). A
// segment deleted by retention meanwhile reads as empty.
func readSegment(s segment, buf []byte) ([]byte, error) {
	f, err := os.Open(s.path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return buf[:0], nil
		}
		return nil, fmt.Errorf("opening event segment: %w", err)
	}
	defer f.Close()
	if int64(cap(buf)) < s.size {
		buf = make([]byte, s.size)
	}
	buf = buf[:s.size]
	n, err := io.ReadFull(f, buf)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return nil, fmt.Errorf("reading event segment %s: %w", s.path, err)
	}
	return buf[:n], nil
}

func (j *Journal) registerMetrics() {
	if j.o.Registerer == nil {
		return
	}
	j.total = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "probed_events_total", Help: "Events recorded in the journal, by kind.",
	}, []string{"kind"})
	for _, k := range Kinds() {
		j.total.WithLabelValues(string(k))
	}
	j.failures = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "probed_events_write_failures_total", Help: "Events that could not be written to the journal on disk.",
	})
	size := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "probed_events_storage_bytes", Help: "Bytes of the event journal's segment files.",
	}, func() float64 { return float64(j.Stats().Bytes) })
	j.o.Registerer.MustRegister(j.total, j.failures, size)
}
