package netlab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"time"
)

// DefaultControlSocket is where `netlab up` and `netlab demo` serve the
// control API and where `netlab set` looks for it.
const DefaultControlSocket = "/run/netlab/control.sock"

// Duration is a time.Duration written as "40ms" in JSON.
type Duration time.Duration

// MarshalJSON writes the duration as a Go duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads a Go duration string such as "40ms".
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string such as \"40ms\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// PathPatch changes some parameters of one or more directed paths. Empty
// From, To or Path (or "*") select every site or path; fields left nil keep
// their value.
type PathPatch struct {
	From string `json:"from,omitempty"`
	To   string `json:"to,omitempty"`
	Path string `json:"path,omitempty"`
	// Both applies the patch to the return direction too.
	Both bool `json:"both,omitempty"`

	Delay        *Duration     `json:"delay,omitempty"`
	Jitter       *Duration     `json:"jitter,omitempty"`
	Reorder      *bool         `json:"reorder,omitempty"`
	Loss         *float64      `json:"loss,omitempty"`
	Down         *bool         `json:"down,omitempty"`
	Hops         *[]netip.Addr `json:"hops,omitempty"`
	MTU          *int          `json:"mtu,omitempty"`
	MTUBlackhole *bool         `json:"mtu_blackhole,omitempty"`
	// DSCP sets the rewrite; a negative value removes it.
	DSCP *int `json:"dscp,omitempty"`

	// Members resizes the path's member list (ECMP / LAG): new members
	// add nothing to the path until changed, members beyond the new size
	// are removed, 0 makes it a single path again. Applied first.
	Members *int `json:"members,omitempty"`
	// Member, when set, points Delay, Jitter, Loss, Down and Hops at that
	// member (0-based) instead of the path; the other fields are the
	// path's only and are refused with it.
	Member *int `json:"member,omitempty"`
}

func (pp *PathPatch) apply(p *PathParams) error {
	if pp.Members != nil {
		n := *pp.Members
		if n < 0 || n > MaxMembers {
			return fmt.Errorf("members %d is outside 0..%d", n, MaxMembers)
		}
		switch {
		case n == 0:
			p.Members = nil
		case n <= len(p.Members):
			p.Members = p.Members[:n]
		default:
			p.Members = append(p.Members, make([]MemberParams, n-len(p.Members))...)
		}
	}
	if pp.Member != nil {
		i := *pp.Member
		if i < 0 || i >= len(p.Members) {
			return fmt.Errorf("member %d: the path has %d members (set members first)", i, len(p.Members))
		}
		if pp.Reorder != nil || pp.MTU != nil || pp.MTUBlackhole != nil || pp.DSCP != nil {
			return errors.New("reorder, mtu, mtu_blackhole and dscp are parameters of the path, not of a member")
		}
		m := &p.Members[i]
		if pp.Delay != nil {
			m.Delay = time.Duration(*pp.Delay)
		}
		if pp.Jitter != nil {
			m.Jitter = time.Duration(*pp.Jitter)
		}
		if pp.Loss != nil {
			m.Loss = *pp.Loss
		}
		if pp.Down != nil {
			m.Down = *pp.Down
		}
		if pp.Hops != nil {
			m.Hops = append([]netip.Addr(nil), (*pp.Hops)...)
		}
		return nil
	}
	if pp.Delay != nil {
		p.Delay = time.Duration(*pp.Delay)
	}
	if pp.Jitter != nil {
		p.Jitter = time.Duration(*pp.Jitter)
	}
	if pp.Reorder != nil {
		p.Reorder = *pp.Reorder
	}
	if pp.Loss != nil {
		p.Loss = *pp.Loss
	}
	if pp.Down != nil {
		p.Down = *pp.Down
	}
	if pp.Hops != nil {
		p.Hops = append([]netip.Addr(nil), (*pp.Hops)...)
	}
	if pp.MTU != nil {
		p.MTU = *pp.MTU
	}
	if pp.MTUBlackhole != nil {
		p.MTUBlackhole = *pp.MTUBlackhole
	}
	if pp.DSCP != nil {
		if *pp.DSCP < 0 {
			p.DSCP = nil
		} else {
			d := uint8(min(*pp.DSCP, 255))
			p.DSCP = &d
		}
	}
	return nil
}

// Patch applies pp to every directed path it selects and returns them. It
// checks every path first, so a bad patch changes nothing.
func (l *Lab) Patch(pp PathPatch) ([]LinkKey, error) {
	match := func(sel, v string) bool { return sel == "" || sel == "*" || sel == v }
	for _, sel := range []string{pp.From, pp.To} {
		if sel != "" && sel != "*" && l.byName[sel] == nil {
			return nil, fmt.Errorf("unknown site %q (sites: %v)", sel, l.SiteNames())
		}
	}
	var keys []LinkKey
	for _, k := range l.Links() {
		fwd := match(pp.From, k.From) && match(pp.To, k.To)
		back := pp.Both && match(pp.From, k.To) && match(pp.To, k.From)
		if match(pp.Path, k.Path) && (fwd || back) {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("no lab path matches from=%q to=%q path=%q", pp.From, pp.To, pp.Path)
	}
	next := make([]PathParams, len(keys))
	for i, k := range keys {
		p, _ := l.Path(k.From, k.To, k.Path)
		if err := pp.apply(&p); err != nil {
			return nil, fmt.Errorf("path %v: %w", k, err)
		}
		if err := p.Validate(); err != nil {
			return nil, fmt.Errorf("path %v: %w", k, err)
		}
		next[i] = p
	}
	for i, k := range keys {
		if err := l.SetPath(k.From, k.To, k.Path, next[i]); err != nil {
			return nil, err
		}
	}
	return keys, nil
}

// LinkState is one directed path as the control API shows it.
type LinkState struct {
	From         string       `json:"from"`
	To           string       `json:"to"`
	Path         string       `json:"path"`
	Delay        Duration     `json:"delay"`
	Jitter       Duration     `json:"jitter"`
	Reorder      bool         `json:"reorder"`
	Loss         float64      `json:"loss"`
	Down         bool         `json:"down"`
	Hops         []netip.Addr `json:"hops"`
	MTU          int          `json:"mtu"`
	MTUBlackhole bool         `json:"mtu_blackhole"`
	DSCP         *uint8       `json:"dscp"`
	Stats        LinkStats    `json:"stats"`
	// Members are the path's member paths (ECMP / LAG), if any.
	Members []MemberState `json:"members,omitempty"`
}

// MemberState is one member path as the control API shows it: what it adds
// to the path, and its counters.
type MemberState struct {
	Delay  Duration     `json:"delay"`
	Jitter Duration     `json:"jitter"`
	Loss   float64      `json:"loss"`
	Down   bool         `json:"down"`
	Hops   []netip.Addr `json:"hops"` // a family without hops here: the path's
	Stats  MemberStats  `json:"stats"`
}

// State lists every directed path with its parameters and counters.
func (l *Lab) State() []LinkState {
	var out []LinkState
	for _, k := range l.Links() {
		p, _ := l.Path(k.From, k.To, k.Path)
		st, _ := l.Stats(k.From, k.To, k.Path)
		ls := LinkState{From: k.From, To: k.To, Path: k.Path, Delay: Duration(p.Delay), Jitter: Duration(p.Jitter),
			Reorder: p.Reorder, Loss: p.Loss, Down: p.Down, Hops: p.Hops, MTU: p.MTU, MTUBlackhole: p.MTUBlackhole, DSCP: p.DSCP, Stats: st}
		ms, _ := l.MemberStats(k.From, k.To, k.Path)
		for i, m := range p.Members {
			mst := MemberState{Delay: Duration(m.Delay), Jitter: Duration(m.Jitter), Loss: m.Loss, Down: m.Down, Hops: m.Hops}
			if i < len(ms) {
				mst.Stats = ms[i]
			}
			ls.Members = append(ls.Members, mst)
		}
		out = append(out, ls)
	}
	return out
}

// BlockRequest opens or closes a segmentation boundary (see SetBlocked).
type BlockRequest struct {
	From    string     `json:"from"`
	Addr    netip.Addr `json:"addr"`
	Blocked bool       `json:"blocked"`
}

// Handler serves the control API:
//
//	GET  /links   every directed path ([]LinkState)
//	POST /links   apply a PathPatch, answer the paths changed
//	POST /block   apply a BlockRequest
//	GET  /sites   site names, namespaces and addresses
func (l *Lab) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /links", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, l.State()) })
	mux.HandleFunc("POST /links", func(w http.ResponseWriter, r *http.Request) {
		var pp PathPatch
		if err := decodeJSON(r, &pp); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		keys, err := l.Patch(pp)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		writeJSON(w, keys)
	})
	mux.HandleFunc("POST /block", func(w http.ResponseWriter, r *http.Request) {
		var br BlockRequest
		if err := decodeJSON(r, &br); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if err := l.SetBlocked(br.From, br.Addr, br.Blocked); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		writeJSON(w, br)
	})
	mux.HandleFunc("GET /sites", func(w http.ResponseWriter, r *http.Request) {
		type site struct {
			Name  string `json:"name"`
			NetNS string `json:"netns"`
			Addrs []Addr `json:"addrs"`
		}
		var out []site
		for _, s := range l.Sites() {
			out = append(out, site{s.Name(), s.NetNS(), s.Addrs()})
		}
		writeJSON(w, out)
	})
	return mux
}

func decodeJSON(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("decoding request: %w", err)
	}
	return nil
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// ServeControl serves Handler on a unix socket (mode 0600: root only) until
// ctx is done, then removes the socket.
func (l *Lab) ServeControl(ctx context.Context, socket string) error {
	if err := os.MkdirAll(filepath.Dir(socket), 0o755); err != nil {
		return fmt.Errorf("creating control socket directory: %w", err)
	}
	if c, err := net.Dial("unix", socket); err == nil {
		c.Close()
		return fmt.Errorf("control socket %s is in use: another lab is running", socket)
	}
	_ = os.Remove(socket) // left by a crashed lab
	ln, err := net.Listen("unix", socket)
	if err != nil {
		return fmt.Errorf("listening on control socket: %w", err)
	}
	_ = os.Chmod(socket, 0o600)
	srv := &http.Server{Handler: l.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	err = srv.Serve(ln)
	_ = os.Remove(socket)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Client talks to a lab's control socket (the `netlab` command uses it).
type Client struct {
	hc *http.Client
}

// NewClient returns a client for the control socket.
func NewClient(socket string) *Client {
	return &Client{hc: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}}}
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://netlab"+path, body)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("talking to the lab (is `netlab up` or `netlab demo` running?): %w", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("lab refused %s %s: %s", method, path, bytes.TrimSpace(b))
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// Patch applies a PathPatch on the running lab.
func (c *Client) Patch(ctx context.Context, pp PathPatch) ([]LinkKey, error) {
	var keys []LinkKey
	err := c.do(ctx, http.MethodPost, "/links", pp, &keys)
	return keys, err
}

// Links returns every directed path of the running lab.
func (c *Client) Links(ctx context.Context) ([]LinkState, error) {
	var out []LinkState
	err := c.do(ctx, http.MethodGet, "/links", nil, &out)
	return out, err
}

// Block opens or closes a boundary on the running lab.
func (c *Client) Block(ctx context.Context, br BlockRequest) error {
	return c.do(ctx, http.MethodPost, "/block", br, nil)
}
