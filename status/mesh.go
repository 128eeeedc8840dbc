package status

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/probed/probed/internal/jsonapi"
	"go.uber.org/zap"
)

// Peer is another site's agent.
type Peer struct {
	Site string
	// URL of its GET /api/v1/status, e.g. http://10.79.3.1:9447/api/v1/status.
	URL string
}

// MeshOptions configure a Mesh.
type MeshOptions struct {
	// Site is this agent's site; Self is its view.
	Site string
	Self Provider
	// Sites are every site of the mesh, in the mesh file's order (rows and
	// columns of the matrix, so a site whose agent is unreachable still
	// shows).
	Sites []string
	Peers []Peer
	// Client fetches peers; it carries the TLS and basic-auth settings
	// peers need (nil: a plain client).
	Client *http.Client
	// Timeout for one peer's answer (default 2 s). A peer that does not
	// answer in time is shown as unknown.
	Timeout time.Duration
	// MaxAge: views younger than this are served from cache, so many open
	// consoles cost one fetch per peer per MaxAge (default 1 s).
	MaxAge time.Duration
	Logger *zap.Logger
	Now    func() time.Time
}

// MaxStatusBytes bounds a peer's answer (10,000 targets take about 4 MB).
const MaxStatusBytes = 32 << 20

// Mesh builds the mesh view.
type Mesh struct {
	o MeshOptions

	mu       sync.Mutex
	peers    []Peer
	sites    []string
	cached   *View
	inflight chan struct{} // closed when the running refresh ends
}

// NewMesh returns a Mesh.
func NewMesh(o MeshOptions) *Mesh {
	if o.Client == nil {
		o.Client = &http.Client{}
	}
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Second
	}
	if o.MaxAge <= 0 {
		o.MaxAge = time.Second
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Mesh{o: o, peers: slices.Clone(o.Peers), sites: slices.Clone(o.Sites)}
}

// SetPeers replaces the sites and peers (after a reload).
func (m *Mesh) SetPeers(sites []string, peers []Peer) {
	m.mu.Lock()
	m.sites, m.peers = slices.Clone(sites), slices.Clone(peers)
	m.cached = nil
	m.mu.Unlock()
}

// View is the body of GET /api/v1/mesh.
type View struct {
	Time time.Time `json:"time"`
	// Self is this agent's site.
	Self string `json:"self"`
	// RefreshSeconds is how often the console should ask again: half the
	// probe interval (a change shows within one interval and the cache's
	// age), between 1 and 10 s.
	RefreshSeconds float64  `json:"refresh_seconds"`
	Sites          []string `json:"sites"`
	// Agents: this one first, then the peers in site order.
	Agents []Agent `json:"agents"`
	// Cells is the matrix.
	Cells []Cell `json:"cells"`
}

// Agent is one agent as this one sees it.
type Agent struct {
	Site string `json:"site"`
	// State is "ok" (answered), or "unknown" (no answer in time, an
	// error, or a wrong answer): the agent's own targets are then unknown,
	// never down.
	State string `json:"state"`
	Error string `json:"error,omitempty"`
	// FetchSeconds is how long its answer took.
	FetchSeconds float64 `json:"fetch_seconds"`
	Status       *Status `json:"status,omitempty"`
}

// Cell states.
const (
	CellUp       = "up"
	CellDown     = "down"
	CellDegraded = "degraded" // some of the cell's targets down
	CellUnknown  = "unknown"  // no answer from the source agent, or no verdict yet
)

// Cell is one (source site, target site, path, segment) of the matrix,
// summarising its targets (guards apart).
type Cell struct {
	SourceSite string `json:"source_site"`
	TargetSite string `json:"target_site"`
	Path       string `json:"path"`
	Segment    string `json:"segment"`
	State      string `json:"state"`
	// RTTMedianSeconds is the median of the targets' medians (ICMP
	// targets when there are any, TCP otherwise).
	RTTMedianSeconds *float64 `json:"rtt_median_seconds"`
	// LossRatio is the worst target's.
	LossRatio *float64 `json:"loss_ratio"`
	Targets   int      `json:"targets"`
	Down      int      `json:"down"`
	// Violation: a guard of this cell answers (segmentation violation).
	Violation bool `json:"segmentation_violation,omitempty"`
}

// View returns the mesh view, from cache when fresh. Concurrent callers
// share one refresh; a caller that goes away does not cancel it.
func (m *Mesh) View(ctx context.Context) (*View, error) {
	for {
		m.mu.Lock()
		if m.cached != nil && m.o.Now().Sub(m.cached.Time) < m.o.MaxAge {
			v := m.cached
			m.mu.Unlock()
			return v, nil
		}
		if m.inflight == nil {
			done := make(chan struct{})
			m.inflight = done
			sites, peers := m.sites, m.peers
			m.mu.Unlock()
			v := m.build(context.WithoutCancel(ctx), sites, peers)
			m.mu.Lock()
			m.cached, m.inflight = v, nil
			m.mu.Unlock()
			close(done)
			return v, nil
		}
		wait := m.inflight
		m.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for the mesh view: %w", ctx.Err())
		}
	}
}

// build takes this agent's status and fetches every peer's at once.
func (m *Mesh) build(ctx context.Context, sites []string, peers []Peer) *View {
	start := m.o.Now()
	agents := make([]Agent, len(peers)+1)
	var wg sync.WaitGroup
	for i, p := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			agents[i+1] = m.fetch(ctx, p)
		}()
	}
	self := Agent{Site: m.o.Site, State: "ok"}
	sctx, cancel := context.WithTimeout(ctx, m.o.Timeout)
	st, err := m.o.Self.Status(sctx)
	cancel()
	if err == nil && st == nil {
		err = errors.New("no status")
	}
	if err != nil {
		self.State, self.Error, st = CellUnknown, fmt.Sprintf("own status: %v", err), nil
	} else {
		self.Status = st
	}
	self.FetchSeconds = m.o.Now().Sub(start).Seconds()
	agents[0] = self
	wg.Wait()

	v := &View{Time: m.o.Now(), Self: m.o.Site, Sites: sites, Agents: agents, RefreshSeconds: 1}
	if st != nil && st.IntervalSeconds > 0 {
		v.RefreshSeconds = min(max(st.IntervalSeconds/2, 1), 10)
	}
	v.Cells = Aggregate(sites, agents)
	return v
}

// fetch asks one peer for its status.
func (m *Mesh) fetch(ctx context.Context, p Peer) Agent {
	a := Agent{Site: p.Site, State: CellUnknown}
	start := m.o.Now()
	defer func() { a.FetchSeconds = m.o.Now().Sub(start).Seconds() }()
	ctx, cancel := context.WithTimeout(ctx, m.o.Timeout)
	defer cancel()
	st, err := m.get(ctx, p)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("no answer within %v", m.o.Timeout)
		}
		a.Error = err.Error()
		m.o.Logger.Debug("peer status unavailable", zap.String("site", p.Site), zap.String("url", p.URL), zap.Error(err))
		return a
	}
	a.State, a.Status = "ok", st
	return a
}

func (m *Mesh) get(ctx context.Context, p Peer) (*Status, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL, nil)
	if err != nil {
		return nil, fmt.Errorf("bad peer URL %q: %w", p.URL, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := m.o.Client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetching %s: %w", p.URL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("fetching %s: %s: %s", p.URL, resp.Status, b)
	}
	var st Status
	if err := json.NewDecoder(io.LimitReader(resp.Body, MaxStatusBytes)).Decode(&st); err != nil {
		return nil, fmt.Errorf("reading the status of %s: %w", p.URL, err)
	}
	if st.Site != p.Site {
		return nil, fmt.Errorf("%s answers as site %q, expected %q", p.URL, st.Site, p.Site)
	}
	return &st, nil
}

// Aggregate builds the matrix cells from the agents' statuses. An agent in
// state unknown gets one unknown cell per other site (path and segment
// empty): what it sees is not known, and it must not read as down.
func Aggregate(sites []string, agents []Agent) []Cell {
	type key struct{ src, dst, path, seg string }
	groups := map[key][]*Target{}
	var cells []Cell
	for _, a := range agents {
		if a.State != "ok" || a.Status == nil {
			for _, s := range sites {
				if s != a.Site {
					cells = append(cells, Cell{SourceSite: a.Site, TargetSite: s, State: CellUnknown})
				}
			}
			continue
		}
		for i := range a.Status.Targets {
			t := &a.Status.Targets[i]
			k := key{t.SourceSite, t.TargetSite, t.Path, t.Segment}
			groups[k] = append(groups[k], t)
		}
	}
	for k, ts := range groups {
		c := Cell{SourceSite: k.src, TargetSite: k.dst, Path: k.path, Segment: k.seg}
		var icmp, tcp []float64
		known := 0
		for _, t := range ts {
			if t.Guard {
				if t.Violation != nil && *t.Violation {
					c.Violation = true
				}
				continue
			}
			c.Targets++
			if t.Up != nil {
				known++
				if !*t.Up {
					c.Down++
				}
			}
			if t.LossRatio != nil && (c.LossRatio == nil || *t.LossRatio > *c.LossRatio) {
				c.LossRatio = ptr(*t.LossRatio)
			}
			if t.RTTMedianSeconds != nil && (t.Up == nil || *t.Up) {
				if t.Protocol == "icmp" {
					icmp = append(icmp, *t.RTTMedianSeconds)
				} else {
					tcp = append(tcp, *t.RTTMedianSeconds)
				}
			}
		}
		switch {
		case c.Targets == 0:
			if !c.Violation {
				continue // only silent guards: nothing to show
			}
			c.State = CellUp
		case known == 0:
			c.State = CellUnknown
		case c.Down == 0:
			c.State = CellUp
		case c.Down == known:
			c.State = CellDown
		default:
			c.State = CellDegraded
		}
		if len(icmp) == 0 {
			icmp = tcp
		}
		if len(icmp) > 0 {
			c.RTTMedianSeconds = ptr(median(icmp))
		}
		cells = append(cells, c)
	}
	order := map[string]int{}
	for i, s := range sites {
		order[s] = i
	}
	rank := func(s string) int {
		if i, ok := order[s]; ok {
			return i
		}
		return len(order)
	}
	slices.SortFunc(cells, func(a, b Cell) int {
		return cmp.Or(cmp.Compare(rank(a.SourceSite), rank(b.SourceSite)), cmp.Compare(a.SourceSite, b.SourceSite),
			cmp.Compare(rank(a.TargetSite), rank(b.TargetSite)), cmp.Compare(a.TargetSite, b.TargetSite),
			cmp.Compare(a.Path, b.Path), cmp.Compare(a.Segment, b.Segment))
	})
	return cells
}

func ptr(v float64) *float64 { return &v }

func median(v []float64) float64 {
	sort.Float64s(v)
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}

// Handler serves GET /api/v1/mesh.
func (m *Mesh) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !jsonapi.Get(w, r) {
			return
		}
		if len(r.URL.Query()) > 0 {
			jsonapi.Error(w, http.StatusBadRequest, "GET "+PathMesh+" takes no parameters")
			return
		}
		v, err := m.View(r.Context())
		if err != nil {
			return // the client went away
		}
		jsonapi.Write(w, v)
	})
}

// Register mounts GET /api/v1/status (this agent, from the mesh's Self) and
// GET /api/v1/mesh on mux.
func (m *Mesh) Register(mux *http.ServeMux) {
	mux.Handle(PathStatus, Handler(m.o.Self, m.o.Logger))
	mux.Handle(PathMesh, m.Handler())
}

// BasicAuth wraps a transport so every request carries basic-auth
// credentials (peers behind --web.config.file basic auth).
func BasicAuth(rt http.RoundTripper, user, password string) http.RoundTripper {
	if rt == nil {
		rt = http.DefaultTransport
	}
	return roundTripFunc(func(r *http.Request) (*http.Response, error) {
		r = r.Clone(r.Context())
		r.SetBasicAuth(user, password)
		return rt.RoundTrip(r)
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
