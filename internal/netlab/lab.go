package netlab

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// TUNName is the name of the TUN device in every site namespace.
const TUNName = "lab0"

// Lab is a running set of site namespaces joined by the emulator.
type Lab struct {
	topo   Topology
	prefix string
	clock  clock
	errs   errHistogram

	sites  []*siteRT
	byName map[string]*siteRT
	addrs  map[netip.Addr]addrRef
	paths  []string // every path name, index = addrRef.path
	// links[from][to][path]; nil where the destination has no address on
	// the path. The slices never change after Start; parameters are
	// swapped atomically.
	links [][][]*link

	blockMu sync.Mutex
	blocked atomic.Pointer[map[blockKey]struct{}]

	// Packets the emulator could not place: no lab site owns the
	// destination (e.g. a hop address, or IPv6 neighbour chatter).
	unroutable atomic.Uint64

	procsRaised bool

	closeOnce sync.Once
	closeErr  error
	done      chan struct{}
	wg        sync.WaitGroup
}

type addrRef struct {
	site int
	path int
}

type blockKey struct {
	from int
	dst  netip.Addr
}

// siteRT is one site at run time.
type siteRT struct {
	idx       int
	spec      SiteSpec
	ns        *netns
	tun       int // TUN fd, non-blocking; -1 until opened
	tap       *tap
	stop      int // eventfd that ends the input thread; -1 until opened
	out       *outQueue
	listeners []net.Listener
}

// link is one directed path.
type link struct {
	key    LinkKey
	params atomic.Pointer[PathParams] // never mutated once stored
	// lastDue keeps packets in order when Reorder is off. Only the input
	// goroutine of the From site touches it.
	lastDue int64
	stats   linkCounters
	// members is allocated when the path first gets members (see
	// ensureMembers) and then never replaced.
	members atomic.Pointer[[MaxMembers]memberRT]
}

type linkCounters struct {
	packets, delivered, lost, down, blocked, mtuErrors, mtuDropped, ttlExpired atomic.Uint64
}

// LinkStats counts what one directed path did with its packets.
type LinkStats struct {
	Packets    uint64 // entered the path
	Delivered  uint64 // queued for the destination
	Lost       uint64 // dropped by random loss
	Down       uint64 // dropped because the path was down
	Blocked    uint64 // dropped by SetBlocked
	MTUErrors  uint64 // answered with Fragmentation Needed / Packet Too Big
	MTUDropped uint64 // dropped by an MTU black hole
	TTLExpired uint64 // answered with Time Exceeded
}

// Start builds the lab: one namespace and TUN device per site, addresses,
// routes, TCP listeners, and the emulator goroutines. Stale namespaces of
// crashed labs are removed first. The lab closes itself when ctx is done;
// call Close when finished with it.
func Start(ctx context.Context, topo Topology) (_ *Lab, err error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("netlab needs root (network namespaces, TUN devices)")
	}
	l := &Lab{topo: topo, clock: clock{epoch: time.Now()}, byName: map[string]*siteRT{}, addrs: map[netip.Addr]addrRef{}, done: make(chan struct{})}
	if err := l.index(); err != nil {
		return nil, err
	}
	l.prefix = topo.Prefix
	if l.prefix == "" {
		l.prefix = randomPrefix()
	}
	if !strings.HasPrefix(l.prefix, NSPrefix) {
		return nil, fmt.Errorf("topology prefix %q must start with %q", l.prefix, NSPrefix)
	}
	empty := map[blockKey]struct{}{}
	l.blocked.Store(&empty)
	if _, err := CleanStale(); err != nil {
		return nil, fmt.Errorf("cleaning stale lab namespaces: %w", err)
	}
	defer func() {
		if err != nil {
			_ = l.Close()
		}
	}()
	seed := topo.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	for _, s := range l.sites {
		if err := l.buildSite(s); err != nil {
			return nil, fmt.Errorf("building site %s: %w", s.spec.Name, err)
		}
	}
	// Each site has two real-time packet threads, and a Go thread needs a
	// P to run. With the default GOMAXPROCS (the CPU count) a woken packet
	// thread often waits for a P held by an ordinary thread that the kernel
	// has preempted, and packets leave milliseconds late on a loaded
	// machine. Spare Ps cost nothing while idle, so make sure there is one
	// per packet thread, until the last lab of the process closes.
	raiseProcs(2*len(l.sites) + 2)
	l.procsRaised = true
	for _, s := range l.sites {
		rng := rand.New(rand.NewPCG(seed, uint64(s.idx)))
		l.wg.Add(1)
		go func() { defer l.wg.Done(); l.input(s, rng) }()
		s.out.started = true
		go s.out.run()
	}
	go func() {
		select {
		case <-ctx.Done():
			_ = l.Close()
		case <-l.done:
		}
	}()
	return l, nil
}

// index checks the topology and builds the lookup tables.
func (l *Lab) index() error {
	t := &l.topo
	if len(t.Sites) == 0 {
		return errors.New("topology has no sites")
	}
	pathIdx := map[string]int{}
	for i, spec := range t.Sites {
		if spec.Name == "" || strings.ContainsAny(spec.Name, " /\t") {
			return fmt.Errorf("site %d: name %q must be non-empty without spaces or slashes", i, spec.Name)
		}
		if _, dup := l.byName[spec.Name]; dup {
			return fmt.Errorf("site %q is listed twice", spec.Name)
		}
		if len(spec.Addrs) == 0 {
			return fmt.Errorf("site %s has no addresses", spec.Name)
		}
		s := &siteRT{idx: i, spec: spec, tun: -1, stop: -1}
		l.sites = append(l.sites, s)
		l.byName[spec.Name] = s
		for _, a := range spec.Addrs {
			if !a.Addr.IsValid() || a.Addr.IsLoopback() || a.Addr.IsUnspecified() || a.Addr.IsMulticast() || a.Addr.Is4In6() {
				return fmt.Errorf("site %s: address %v cannot be a lab address", spec.Name, a.Addr)
			}
			if a.Path == "" {
				return fmt.Errorf("site %s: address %v has no path", spec.Name, a.Addr)
			}
			if prev, dup := l.addrs[a.Addr]; dup {
				return fmt.Errorf("address %v is on both %s and %s", a.Addr, t.Sites[prev.site].Name, spec.Name)
			}
			pi, ok := pathIdx[a.Path]
			if !ok {
				pi = len(l.paths)
				pathIdx[a.Path] = pi
				l.paths = append(l.paths, a.Path)
			}
			l.addrs[a.Addr] = addrRef{site: i, path: pi}
		}
	}
	l.links = make([][][]*link, len(l.sites))
	for i, from := range l.sites {
		l.links[i] = make([][]*link, len(l.sites))
		for j, to := range l.sites {
			l.links[i][j] = make([]*link, len(l.paths))
			if i == j {
				continue
			}
			for _, a := range to.spec.Addrs {
				pi := pathIdx[a.Path]
				if l.links[i][j][pi] != nil {
					continue
				}
				lk := &link{key: LinkKey{from.spec.Name, to.spec.Name, a.Path}}
				p := PathParams{}
				lk.params.Store(&p)
				l.links[i][j][pi] = lk
			}
		}
	}
	for k, p := range t.Links {
		lk, err := l.link(k.From, k.To, k.Path)
		if err != nil {
			return fmt.Errorf("topology link %v: %w", k, err)
		}
		if err := p.Validate(); err != nil {
			return fmt.Errorf("topology link %v: %w", k, err)
		}
		c := p.Clone()
		lk.ensureMembers(&c)
		lk.params.Store(&c)
	}
	return nil
}

func (l *Lab) link(from, to, path string) (*link, error) {
	f, ok := l.byName[from]
	if !ok {
		return nil, fmt.Errorf("unknown site %q", from)
	}
	t, ok := l.byName[to]
	if !ok {
		return nil, fmt.Errorf("unknown site %q", to)
	}
	if f == t {
		return nil, fmt.Errorf("site %s to itself is not a lab path", from)
	}
	for pi, name := range l.paths {
		if name == path {
			if lk := l.links[f.idx][t.idx][pi]; lk != nil {
				return lk, nil
			}
		}
	}
	return nil, fmt.Errorf("site %s has no address on path %q (paths: %s)", to, path, strings.Join(l.pathsOf(t), ", "))
}

func (l *Lab) pathsOf(s *siteRT) []string {
	seen := map[string]bool{}
	var out []string
	for _, a := range s.spec.Addrs {
		if !seen[a.Path] {
			seen[a.Path] = true
			out = append(out, a.Path)
		}
	}
	return out
}

// buildSite creates the namespace and TUN device and configures them.
func (l *Lab) buildSite(s *siteRT) error {
	ns, err := createNetNS(l.prefix + s.spec.Name)
	if err != nil {
		return err
	}
	s.ns = ns
	if err := ns.do(func() error {
		tun, err := openTUN(TUNName)
		if err != nil {
			return err
		}
		s.tun = tun
		if s.tap, err = openTap(TUNName); err != nil {
			return err
		}
		return writeSysctls(map[string]string{
			// Replies from hop addresses arrive on lab0 like everything else.
			"net/ipv4/conf/all/rp_filter":     "0",
			"net/ipv4/conf/default/rp_filter": "0",
			// Unprivileged ICMP echo sockets, as probed may use them.
			"net/ipv4/ping_group_range": "0 2147483647",
			// Sites answer every probe: no ICMP rate limits in the lab.
			"net/ipv4/icmp_ratelimit":    "0",
			"net/ipv4/icmp_msgs_per_sec": "1000000",
			// The global bucket (IPv4 and IPv6 errors) holds 50 by default
			// and refills every 20 ms: a burst of probes to closed UDP
			// ports would go partly unanswered.
			"net/ipv4/icmp_msgs_burst":     "1000000",
			"net/ipv6/icmp/ratelimit":      "0",
			"net/ipv6/conf/all/accept_dad": "0",
		})
	}); err != nil {
		return err
	}
	out, err := newOutQueue(s.tun, &l.clock, &l.errs)
	if err != nil {
		return err
	}
	s.out = out
	if s.stop, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		return fmt.Errorf("creating eventfd: %w", err)
	}
	if err := runBatch(ns.name, l.ipCommands(s)); err != nil {
		return err
	}
	for _, port := range l.topo.TCPPorts {
		var ln net.Listener
		if err := ns.do(func() (err error) {
			ln, err = net.Listen("tcp", fmt.Sprintf("[::]:%d", port))
			return err
		}); err != nil {
			return fmt.Errorf("TCP listener on port %d: %w", port, err)
		}
		s.listeners = append(s.listeners, ln)
		go acceptAndClose(ln)
	}
	return nil
}

// ipCommands is the `ip -batch` script of a site: the TUN device up with the
// site's addresses, a host route to every other site's address with the
// site's own address of the same path as source (so replies come back over
// the same path), and default routes into the emulator, which drops what
// no site owns.
func (l *Lab) ipCommands(s *siteRT) []string {
	cmds := []string{
		"link set lo up",
		fmt.Sprintf("link set %s mtu %d up", TUNName, TUNMTU),
	}
	for _, a := range s.spec.Addrs {
		if a.Addr.Is4() {
			cmds = append(cmds, fmt.Sprintf("addr add %s/32 dev %s", a.Addr, TUNName))
		} else {
			cmds = append(cmds, fmt.Sprintf("addr add %s/128 dev %s nodad", a.Addr, TUNName))
		}
	}
	src := func(path string, v6 bool) (netip.Addr, bool) {
		for _, a := range s.spec.Addrs {
			if a.Path == path && a.Addr.Is6() == v6 {
				return a.Addr, true
			}
		}
		return netip.Addr{}, false
	}
	for _, o := range l.sites {
		if o == s {
			continue
		}
		for _, a := range o.spec.Addrs {
			bits := 32
			if a.Addr.Is6() {
				bits = 128
			}
			c := fmt.Sprintf("route add %s/%d dev %s", a.Addr, bits, TUNName)
			if sa, ok := src(a.Path, a.Addr.Is6()); ok {
				c += " src " + sa.String()
			}
			cmds = append(cmds, c)
		}
	}
	return append(cmds, "route add 0.0.0.0/0 dev "+TUNName, "route add ::/0 dev "+TUNName)
}

func runBatch(ns string, cmds []string) error {
	cmd := exec.Command("ip", "-n", ns, "-batch", "-")
	cmd.Stdin = strings.NewReader(strings.Join(cmds, "\n") + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("configuring namespace %s: ip -batch: %v: %s", ns, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// openTUN creates a TUN device in the calling thread's namespace and
// returns its non-blocking fd.
func openTUN(name string) (int, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("opening /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return -1, err
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("creating TUN device %s: %w", name, err)
	}
	return fd, nil
}

func writeSysctls(kv map[string]string) error {
	for k, v := range kv {
		if err := os.WriteFile("/proc/sys/"+k, []byte(v), 0o644); err != nil {
			return fmt.Errorf("setting sysctl %s: %w", strings.ReplaceAll(k, "/", "."), err)
		}
	}
	return nil
}

func acceptAndClose(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond) // e.g. EMFILE: back off, keep serving
			continue
		}
		c.Close()
	}
}

// input reads the packets one site sends and applies the path they take.
// Like the output side it owns a real-time thread, so a packet's send time
// is taken as soon as the kernel queues it, even on a loaded machine.
func (l *Lab) input(s *siteRT, rng *rand.Rand) {
	runtime.LockOSThread() // never unlocked: see outQueue.run
	setRealtime()
	buf := make([]byte, 65536)
	fds := []unix.PollFd{{Fd: int32(s.tun), Events: unix.POLLIN}, {Fd: int32(s.stop), Events: unix.POLLIN}}
	for {
		n, err := unix.Read(s.tun, buf)
		switch {
		case err == nil:
			l.forward(s, rng, buf[:n], s.tap.stamp(buf[:n], &l.clock))
		case err == unix.EAGAIN:
			if _, err := unix.Poll(fds, -1); err != nil && err != unix.EINTR {
				return
			}
			if fds[1].Revents != 0 {
				return
			}
		case err == unix.EINTR:
		default:
			return
		}
	}
}

// forward decides the fate of one packet sent by site s at time now.
func (l *Lab) forward(s *siteRT, rng *rand.Rand, pkt []byte, now int64) {
	h, ok := parseIP(pkt)
	if !ok {
		l.unroutable.Add(1)
		return
	}
	ref, ok := l.addrs[h.dst]
	if !ok || ref.site == s.idx {
		l.unroutable.Add(1)
		return
	}
	lk := l.links[s.idx][ref.site][ref.path]
	if lk == nil {
		l.unroutable.Add(1)
		return
	}
	p := lk.params.Load()
	st := &lk.stats
	st.packets.Add(1)
	if _, blocked := (*l.blocked.Load())[blockKey{s.idx, h.dst}]; blocked {
		st.blocked.Add(1)
		return
	}
	if p.Down {
		st.down.Add(1)
		return
	}
	if p.Loss > 0 && rng.Float64() < p.Loss {
		st.lost.Add(1)
		return
	}
	hops, delay, jitter, lastDue := p.Hops, p.Delay, p.Jitter, &lk.lastDue
	// The flow hash, computed only where members need it.
	var fh uint64
	hashed := false
	var mc *memberRT
	if len(p.Members) > 0 {
		fh, hashed = packetFlow(pkt, &h, true).Hash(), true
		i := memberIndex(fh, len(p.Members))
		m := &p.Members[i]
		mc = &lk.members.Load()[i]
		mc.packets.Add(1)
		if m.Down {
			mc.down.Add(1)
			st.down.Add(1)
			return
		}
		if m.Loss > 0 && rng.Float64() < m.Loss {
			mc.lost.Add(1)
			st.lost.Add(1)
			return
		}
		if len(m.Hops) > 0 && familyHops(m.Hops, h.v6) > 0 {
			hops = m.Hops
		}
		delay += m.Delay
		jitter += m.Jitter
		lastDue = &mc.lastDue
	}
	nhops := familyHops(hops, h.v6)
	// Where the answer of hop k comes back: after the round trip to k/(n+1)
	// of the path, the return leg taking the reverse path's delay (and that
	// of the member the flow's hash selects there).
	answerAt := func(k int) int64 {
		var back time.Duration
		if rev := l.links[ref.site][s.idx][ref.path]; rev != nil {
			rp := rev.params.Load()
			back = rp.Delay
			if len(rp.Members) > 0 {
				if !hashed {
					fh, hashed = packetFlow(pkt, &h, true).Hash(), true
				}
				back += rp.Members[memberIndex(fh, len(rp.Members))].Delay
			}
		}
		return now + int64(delay+back)*int64(k)/int64(nhops+1)
	}
	if nhops > 0 && h.ttl <= nhops {
		k := max(h.ttl, 1)
		q := append([]byte(nil), pkt...)
		setTTL(q, &h, 1) // quoted as it arrived at hop k
		code := uint8(0)
		typ := uint8(icmp4TimeExceeded)
		if h.v6 {
			typ = icmp6TimeExceeded
		}
		st.ttlExpired.Add(1)
		if mc != nil {
			mc.ttlExpired.Add(1)
		}
		s.out.push(answerAt(k), icmpError(&h, q, familyHop(hops, h.v6, k), typ, code, 0, icmpErrorTTL-(k-1)))
		return
	}
	if p.MTU > 0 && len(pkt) > p.MTU && (h.v6 || h.df) {
		if p.MTUBlackhole {
			st.mtuDropped.Add(1)
			if mc != nil {
				mc.mtuDropped.Add(1)
			}
			return
		}
		from := h.dst
		if nhops > 0 {
			from = familyHop(hops, h.v6, 1)
		}
		var msg []byte
		if h.v6 {
			msg = icmpError(&h, pkt, from, icmp6PacketTooBig, 0, uint32(p.MTU), icmpErrorTTL)
		} else {
			msg = icmpError(&h, pkt, from, icmp4DestUnreach, icmp4FragNeeded, uint32(p.MTU), icmpErrorTTL)
		}
		st.mtuErrors.Add(1)
		if mc != nil {
			mc.mtuErrors.Add(1)
		}
		s.out.push(answerAt(1), msg)
		return
	}
	b := pktCopy(pkt)
	if nhops > 0 {
		setTTL(b, &h, h.ttl-nhops)
	}
	if p.DSCP != nil {
		setDSCP(b, &h, *p.DSCP)
	}
	if jitter > 0 {
		delay += time.Duration((2*rng.Float64() - 1) * float64(jitter))
		delay = max(delay, 0)
	}
	due := now + int64(delay)
	if !p.Reorder {
		due = max(due, *lastDue)
		*lastDue = due
	}
	st.delivered.Add(1)
	if mc != nil {
		mc.delivered.Add(1)
	}
	l.sites[ref.site].out.push(due, b)
}

// Close stops the emulator and removes every namespace of the lab. It is
// safe to call more than once and from several goroutines.
func (l *Lab) Close() error {
	l.closeOnce.Do(func() {
		close(l.done)
		var errs []error
		for _, s := range l.sites {
			for _, ln := range s.listeners {
				ln.Close()
			}
			if s.stop >= 0 {
				_, _ = unix.Write(s.stop, []byte{1, 0, 0, 0, 0, 0, 0, 0})
			}
			if s.out != nil {
				s.out.close()
			}
		}
		l.wg.Wait()
		if l.procsRaised {
			restoreProcs()
		}
		for _, s := range l.sites {
			if s.tun >= 0 {
				unix.Close(s.tun)
			}
			if s.stop >= 0 {
				unix.Close(s.stop)
			}
			if s.tap != nil {
				s.tap.close()
			}
			if s.ns != nil {
				if err := s.ns.remove(); err != nil {
					errs = append(errs, err)
				}
			}
		}
		l.closeErr = errors.Join(errs...)
	})
	return l.closeErr
}

// SetPath replaces the parameters of one directed path at run time.
func (l *Lab) SetPath(from, to, path string, p PathParams) error {
	lk, err := l.link(from, to, path)
	if err != nil {
		return fmt.Errorf("setting path %s->%s/%s: %w", from, to, path, err)
	}
	if err := p.Validate(); err != nil {
		return fmt.Errorf("setting path %s->%s/%s: %w", from, to, path, err)
	}
	c := p.Clone()
	lk.ensureMembers(&c)
	lk.params.Store(&c)
	return nil
}

// SetLink sets both directions of a path between a and b to p; the return
// direction gets the hops (the path's and every member's) in reverse order.
func (l *Lab) SetLink(a, b, path string, p PathParams) error {
	if err := l.SetPath(a, b, path, p); err != nil {
		return err
	}
	return l.SetPath(b, a, path, p.Reversed())
}

// UpdatePath changes some parameters of a directed path: f gets a copy of
// the current ones.
func (l *Lab) UpdatePath(from, to, path string, f func(*PathParams)) error {
	lk, err := l.link(from, to, path)
	if err != nil {
		return fmt.Errorf("updating path %s->%s/%s: %w", from, to, path, err)
	}
	for {
		old := lk.params.Load()
		c := old.Clone()
		f(&c)
		if err := c.Validate(); err != nil {
			return fmt.Errorf("updating path %s->%s/%s: %w", from, to, path, err)
		}
		lk.ensureMembers(&c)
		if lk.params.CompareAndSwap(old, &c) {
			return nil
		}
	}
}

// Path returns the current parameters of a directed path.
func (l *Lab) Path(from, to, path string) (PathParams, error) {
	lk, err := l.link(from, to, path)
	if err != nil {
		return PathParams{}, err
	}
	return lk.params.Load().Clone(), nil
}

// Links lists every directed path of the lab, sorted.
func (l *Lab) Links() []LinkKey {
	var out []LinkKey
	for i := range l.links {
		for j := range l.links[i] {
			for _, lk := range l.links[i][j] {
				if lk != nil {
					out = append(out, lk.key)
				}
			}
		}
	}
	sort.Slice(out, func(a, b int) bool {
		x, y := out[a], out[b]
		if x.From != y.From {
			return x.From < y.From
		}
		if x.To != y.To {
			return x.To < y.To
		}
		return x.Path < y.Path
	})
	return out
}

// Stats returns the counters of one directed path.
func (l *Lab) Stats(from, to, path string) (LinkStats, error) {
	lk, err := l.link(from, to, path)
	if err != nil {
		return LinkStats{}, err
	}
	c := &lk.stats
	return LinkStats{
		Packets: c.packets.Load(), Delivered: c.delivered.Load(), Lost: c.lost.Load(), Down: c.down.Load(),
		Blocked: c.blocked.Load(), MTUErrors: c.mtuErrors.Load(), MTUDropped: c.mtuDropped.Load(), TTLExpired: c.ttlExpired.Load(),
	}, nil
}

// MemberStats returns the counters of the member paths of one directed
// path, one per member of its current parameters (none without members).
// Member i keeps its counters when the parameters change.
func (l *Lab) MemberStats(from, to, path string) ([]MemberStats, error) {
	lk, err := l.link(from, to, path)
	if err != nil {
		return nil, err
	}
	n := len(lk.params.Load().Members)
	ms := lk.members.Load()
	if n == 0 || ms == nil {
		return nil, nil
	}
	out := make([]MemberStats, n)
	for i := range out {
		c := &ms[i]
		out[i] = MemberStats{Packets: c.packets.Load(), Delivered: c.delivered.Load(), Lost: c.lost.Load(), Down: c.down.Load(),
			MTUErrors: c.mtuErrors.Load(), MTUDropped: c.mtuDropped.Load(), TTLExpired: c.ttlExpired.Load()}
	}
	return out, nil
}

// SetBlocked opens or closes a segmentation boundary: while blocked,
// packets from site `from` to address dst are dropped silently (as a
// firewall between segments would), whatever path they take. Other traffic
// of the same path is untouched, unlike Down.
func (l *Lab) SetBlocked(from string, dst netip.Addr, blocked bool) error {
	f, ok := l.byName[from]
	if !ok {
		return fmt.Errorf("blocking %v: unknown site %q", dst, from)
	}
	if _, ok := l.addrs[dst]; !ok {
		return fmt.Errorf("blocking %v from %s: not an address of any lab site", dst, from)
	}
	l.blockMu.Lock()
	defer l.blockMu.Unlock()
	m := map[blockKey]struct{}{}
	for k := range *l.blocked.Load() {
		m[k] = struct{}{}
	}
	if blocked {
		m[blockKey{f.idx, dst}] = struct{}{}
	} else {
		delete(m, blockKey{f.idx, dst})
	}
	l.blocked.Store(&m)
	return nil
}

// DelayError reports how late the emulator delivered packets against their
// due time since Start (or ResetDelayError): its own added-delay error.
func (l *Lab) DelayError() DelayError { return l.errs.snapshot() }

// ResetDelayError starts a new DelayError measurement.
func (l *Lab) ResetDelayError() { l.errs.reset() }

// Unroutable counts packets that no lab site owns (dropped).
func (l *Lab) Unroutable() uint64 { return l.unroutable.Load() }

// SiteNames lists the sites in topology order.
func (l *Lab) SiteNames() []string {
	out := make([]string, len(l.sites))
	for i, s := range l.sites {
		out[i] = s.spec.Name
	}
	return out
}

// procs counts the running labs of the process, which share GOMAXPROCS
// (a process-wide setting): the first raises it, the last restores it.
var procs struct {
	sync.Mutex
	labs, prev int
}

func raiseProcs(want int) {
	procs.Lock()
	defer procs.Unlock()
	if procs.labs == 0 {
		procs.prev = runtime.GOMAXPROCS(0)
	}
	procs.labs++
	if runtime.GOMAXPROCS(0) < want {
		runtime.GOMAXPROCS(want)
	}
}

func restoreProcs() {
	procs.Lock()
	defer procs.Unlock()
	procs.labs--
	if procs.labs == 0 {
		runtime.GOMAXPROCS(procs.prev)
	}
}
