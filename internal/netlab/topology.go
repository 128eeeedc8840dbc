package netlab

import (
	"fmt"
	"math"
	"net/netip"
	"slices"
	"time"
)

// Path names of the reference topology. A path is chosen per packet by its
// destination address (see Addr.Path).
const (
	PathSiteLink = "sitelink"
	PathMPLS     = "mpls"
)

// Topology describes a lab: its sites, their addresses and the initial
// parameters of every directed path between them.
type Topology struct {
	Sites []SiteSpec
	// Links holds the initial parameters per directed site pair and path.
	// Pairs and paths left out start with zero parameters (no delay, no loss).
	Links map[LinkKey]PathParams
	// TCPPorts get an accept-and-close listener in every site (on all of
	// the site's addresses), so TCP-connect probes have something to reach.
	TCPPorts []uint16
	// Seed makes loss and jitter reproducible; 0 picks a random seed.
	Seed uint64
	// Prefix starts every namespace name. Empty means "plab-<random>-", so
	// labs of concurrent test processes never collide. It must start with
	// NSPrefix: only such names are ever created or cleaned.
	Prefix string
}

// SiteSpec is one site: a namespace whose TUN device carries Addrs.
type SiteSpec struct {
	Name  string
	Addrs []Addr
}

// Addr is one address of a site and the path that carries traffic to it.
type Addr struct {
	Addr netip.Addr
	Path string
}

// LinkKey names one directed path: traffic from site From to an address of
// site To that belongs to Path.
type LinkKey struct {
	From string `json:"from"`
	To   string `json:"to"`
	Path string `json:"path"`
}

func (k LinkKey) String() string { return fmt.Sprintf("%s->%s/%s", k.From, k.To, k.Path) }

// PathParams is the behaviour of one directed path.
type PathParams struct {
	// Delay is the one-way delay added to every packet.
	Delay time.Duration
	// Jitter adds a uniform random offset in [-Jitter, +Jitter] to Delay
	// (the distribution netem uses by default); the result is never
	// negative. Without Reorder, a packet is never delivered before the
	// previous packet of the same path, as on a real serial link.
	Jitter  time.Duration
	Reorder bool
	// Loss is the probability (0..1) that a packet is dropped.
	Loss float64
	// Down blackholes the path: every packet is dropped silently.
	Down bool
	// Hops are the intermediate routers. A packet whose TTL / hop limit
	// runs out at hop k gets ICMP Time Exceeded from the k-th hop of its
	// own address family, after the round trip to that hop (hop k sits at
	// k/(n+1) of the path's delay, both ways). Delivered packets lose one
	// TTL per hop of their family.
	Hops []netip.Addr
	// MTU is the path MTU in bytes (IP header included); 0 means no limit
	// beyond the TUN MTU (TUNMTU). A larger IPv4 packet with DF set gets
	// Fragmentation Needed, a larger IPv6 packet Packet Too Big, from the
	// first hop of its family (the destination address when the path has
	// no hops). IPv4 packets without DF pass unfragmented.
	MTU int
	// MTUBlackhole drops too-large packets silently instead of answering.
	MTUBlackhole bool
	// DSCP, when set, rewrites the DSCP bits (IPv4 TOS / IPv6 traffic
	// class, ECN kept) of every packet on the path, like a re-marking
	// router.
	DSCP *uint8
	// Members makes the path an ECMP group or LAG of len(Members) member
	// paths (at most MaxMembers). Each packet takes the member its flow's
	// 5-tuple hash selects (see Flow), so every packet of a flow (echo,
	// trace, connect) takes the same member; the member adds its own
	// delay, jitter, loss and down to the path's and may have its own
	// hops. Nil: one path, exactly as without ECMP.
	Members []MemberParams
}

// MaxMembers is the largest number of member paths of one directed path.
const MaxMembers = 64

// MemberParams is one member path of an ECMP group or LAG: what it adds to
// the path's parameters for the packets hashed onto it. Packets the path
// itself drops (Down, Loss, a block) never reach a member.
type MemberParams struct {
	// Delay is added to the path's Delay.
	Delay time.Duration
	// Jitter is added to the path's Jitter (one uniform draw of the sum).
	Jitter time.Duration
	// Loss is the member's own drop probability, after the path's.
	Loss float64
	// Down blackholes the member only.
	Down bool
	// Hops replace the path's Hops for this member's packets of their
	// address family (Time Exceeded and Fragmentation Needed come from
	// them). A family the member has no hops of keeps the path's hops, as
	// for the members of a LAG, which traceroute cannot tell apart.
	Hops []netip.Addr
}

// TUNMTU is the MTU of every site's TUN device: the largest jumbo frame the
// mesh's paths may carry.
const TUNMTU = 9001

// Validate reports parameters the emulator cannot apply.
func (p *PathParams) Validate() error {
	switch {
	case p.Delay < 0:
		return fmt.Errorf("delay %v is negative", p.Delay)
	case p.Jitter < 0:
		return fmt.Errorf("jitter %v is negative", p.Jitter)
	case p.Loss < 0 || p.Loss > 1:
		return fmt.Errorf("loss %v is outside 0..1", p.Loss)
	case p.MTU != 0 && (p.MTU < 68 || p.MTU > TUNMTU):
		return fmt.Errorf("mtu %d is outside 68..%d", p.MTU, TUNMTU)
	case p.DSCP != nil && *p.DSCP > 63:
		return fmt.Errorf("dscp %d is outside 0..63", *p.DSCP)
	}
	for _, h := range p.Hops {
		if !h.IsValid() {
			return fmt.Errorf("hop address is empty")
		}
	}
	if len(p.Members) > MaxMembers {
		return fmt.Errorf("%d members, at most %d", len(p.Members), MaxMembers)
	}
	for i := range p.Members {
		if err := p.Members[i].Validate(); err != nil {
			return fmt.Errorf("member %d: %w", i, err)
		}
	}
	return nil
}

// Validate reports member parameters the emulator cannot apply.
func (m *MemberParams) Validate() error {
	switch {
	case m.Delay < 0:
		return fmt.Errorf("delay %v is negative", m.Delay)
	case m.Jitter < 0:
		return fmt.Errorf("jitter %v is negative", m.Jitter)
	case m.Loss < 0 || m.Loss > 1:
		return fmt.Errorf("loss %v is outside 0..1", m.Loss)
	}
	for _, h := range m.Hops {
		if !h.IsValid() {
			return fmt.Errorf("hop address is empty")
		}
	}
	return nil
}

// Clone returns a deep copy (Hops, DSCP and Members are not shared).
func (p PathParams) Clone() PathParams {
	if p.Hops != nil {
		p.Hops = append([]netip.Addr(nil), p.Hops...)
	}
	if p.DSCP != nil {
		d := *p.DSCP
		p.DSCP = &d
	}
	if p.Members != nil {
		ms := make([]MemberParams, len(p.Members))
		for i, m := range p.Members {
			ms[i] = m.Clone()
		}
		p.Members = ms
	}
	return p
}

// Clone returns a deep copy (Hops are not shared).
func (m MemberParams) Clone() MemberParams {
	if m.Hops != nil {
		m.Hops = append([]netip.Addr(nil), m.Hops...)
	}
	return m
}

// Reversed is p for the return direction of a link: the hops of the path
// and of every member in reverse order.
func (p PathParams) Reversed() PathParams {
	r := p.Clone()
	slices.Reverse(r.Hops)
	for i := range r.Members {
		slices.Reverse(r.Members[i].Hops)
	}
	return r
}

// RTT is the configured round trip of a path pair: both one-way delays.
func RTT(fwd, rev PathParams) time.Duration { return fwd.Delay + rev.Delay }

// referenceSite is one site of configs/example-mesh.yaml and the city its
// data center is in.
type referenceSite struct {
	name     string
	city     string
	lat, lon float64
}

// The seven sites of configs/example-mesh.yaml, numbered n = 1..7 in this
// order (the n of their addresses).
var referenceSites = []referenceSite{
	{"us-east", "Ashburn", 39.0438, -77.4874},
	{"us-central", "Dallas", 32.7767, -96.7970},
	{"us-west", "San Jose", 37.3382, -121.8863},
	{"ap-tokyo", "Tokyo", 35.6762, 139.6503},
	{"ap-singapore", "Singapore", 1.3521, 103.8198},
	{"ap-sydney", "Sydney", -33.8688, 151.2093},
	{"eu-frankfurt", "Frankfurt", 50.1109, 8.6821},
}

// Delay model of the default topology.
//
// One-way SiteLink delay = great-circle distance (haversine on the city
// coordinates above, R = 6371 km) × 1.4 route factor ÷ (2/3 c = 199.86 km/ms).
// The 1.4 factor is what published inter-city RTTs imply for long-haul
// fibre: Ashburn–Frankfurt is ~88–92 ms RTT in provider latency tables
// (model: 91.7), Ashburn–Tokyo ~150 ms (model: 152.3), Singapore–Sydney
// ~90 ms (model: 88.3). MPLS is the legacy backbone: the reference
// deployment measured SiteLink about 15% lower, so MPLS = SiteLink ÷ 0.85.
//
// The resulting one-way delays (ms), sitelink / mpls:
//
//	us-east      us-central     1869 km   13.1 / 15.4
//	us-east      us-west        3846 km   26.9 / 31.7
//	us-east      ap-tokyo      10874 km   76.2 / 89.6
//	us-east      ap-singapore  15521 km  108.7 / 127.9
//	us-east      ap-sydney     15674 km  109.8 / 129.2
//	us-east      eu-frankfurt   6549 km   45.9 / 54.0
//	us-central   us-west        2332 km   16.3 / 19.2
//	us-central   ap-tokyo      10401 km   72.9 / 85.7
//	us-central   ap-singapore  15646 km  109.6 / 128.9
//	us-central   ap-sydney     13819 km   96.8 / 113.9
//	us-central   eu-frankfurt   8256 km   57.8 / 68.0
//	us-west      ap-tokyo       8341 km   58.4 / 68.7
//	us-west      ap-singapore  13648 km   95.6 / 112.5
//	us-west      ap-sydney     11964 km   83.8 / 98.6
//	us-west      eu-frankfurt   9153 km   64.1 / 75.4
//	ap-tokyo     ap-singapore   5311 km   37.2 / 43.8
//	ap-tokyo     ap-sydney      7826 km   54.8 / 64.5
//	ap-tokyo     eu-frankfurt   9331 km   65.4 / 76.9
//	ap-singapore ap-sydney      6306 km   44.2 / 52.0
//	ap-singapore eu-frankfurt  10258 km   71.9 / 84.5
//	ap-sydney    eu-frankfurt  16483 km  115.5 / 135.8
//
// The default is symmetric; tests set asymmetric delays with SetPath.
const (
	routeFactor   = 1.4
	fibreKmPerMs  = 199.86 // 2/3 of c, in km per millisecond
	mplsOverSL    = 1 / 0.85
	earthRadiusKm = 6371.0
)

// FibreDelay is the default one-way SiteLink delay between two reference
// sites (by name); ok is false for unknown names.
func FibreDelay(a, b string) (d time.Duration, ok bool) {
	var sa, sb *referenceSite
	for i := range referenceSites {
		switch referenceSites[i].name {
		case a:
			sa = &referenceSites[i]
		case b:
			sb = &referenceSites[i]
		}
	}
	if sa == nil || sb == nil {
		return 0, false
	}
	km := haversineKm(sa.lat, sa.lon, sb.lat, sb.lon)
	ms := km * routeFactor / fibreKmPerMs
	// Rounded to 0.1 ms, as in the table above.
	return time.Duration(ms*10+0.5) * time.Millisecond / 10, true
}

// DefaultTopology is the 7-site reference mesh of configs/example-mesh.yaml:
// for site n, 10.77.n.1 / 10.77.n.65 / fd77:n::1 / fd77:n::41 on path
// sitelink, 10.78.n.1 / 10.78.n.65 on path mpls, and the agent address
// 10.79.n.1, which is carried by sitelink. Every directed pair gets the fibre
// delays above and two hops per path and family (10.90.ij.k sitelink,
// 10.91.ij.k mpls, fd90:i:j::k and fd91:i:j::k for IPv6, i = from, j = to),
// and every site a TCP listener on port 443.
func DefaultTopology() Topology {
	t := Topology{Links: map[LinkKey]PathParams{}, TCPPorts: []uint16{443}}
	for i, rs := range referenceSites {
		n := i + 1
		a := func(s string) netip.Addr { return netip.MustParseAddr(s) }
		t.Sites = append(t.Sites, SiteSpec{Name: rs.name, Addrs: []Addr{
			{a(fmt.Sprintf("10.77.%d.1", n)), PathSiteLink},
			{a(fmt.Sprintf("10.77.%d.65", n)), PathSiteLink},
			{a(fmt.Sprintf("10.78.%d.1", n)), PathMPLS},
			{a(fmt.Sprintf("10.78.%d.65", n)), PathMPLS},
			{a(fmt.Sprintf("fd77:%d::1", n)), PathSiteLink},
			{a(fmt.Sprintf("fd77:%d::41", n)), PathSiteLink},
			{a(fmt.Sprintf("10.79.%d.1", n)), PathSiteLink},
		}})
	}
	for i, from := range referenceSites {
		for j, to := range referenceSites {
			if i == j {
				continue
			}
			d, _ := FibreDelay(from.name, to.name)
			for k, path := range []string{PathSiteLink, PathMPLS} {
				delay := d
				if path == PathMPLS {
					delay = time.Duration(float64(d)*mplsOverSL/float64(100*time.Microsecond)+0.5) * 100 * time.Microsecond
				}
				var hops []netip.Addr
				for h := 1; h <= 2; h++ {
					hops = append(hops,
						netip.MustParseAddr(fmt.Sprintf("10.%d.%d%d.%d", 90+k, i+1, j+1, h)),
						netip.MustParseAddr(fmt.Sprintf("fd%d:%d:%d::%d", 90+k, i+1, j+1, h)))
				}
				t.Links[LinkKey{from.name, to.name, path}] = PathParams{Delay: delay, Hops: hops}
			}
		}
	}
	return t
}

func haversineKm(lat1, lon1, lat2, lon2 float64) float64 {
	rad := func(d float64) float64 { return d * math.Pi / 180 }
	dlat, dlon := rad(lat2-lat1), rad(lon2-lon1)
	h := math.Sin(dlat/2)*math.Sin(dlat/2) + math.Cos(rad(lat1))*math.Cos(rad(lat2))*math.Sin(dlon/2)*math.Sin(dlon/2)
	return 2 * earthRadiusKm * math.Asin(math.Sqrt(h))
}

// Subset keeps only the named sites (in the given order) and the links
// between them: a smaller lab with the same addresses and delays.
func (t Topology) Subset(names ...string) (Topology, error) {
	out := Topology{Links: map[LinkKey]PathParams{}, TCPPorts: t.TCPPorts, Seed: t.Seed, Prefix: t.Prefix}
	keep := map[string]bool{}
	for _, n := range names {
		found := false
		for _, s := range t.Sites {
			if s.Name == n {
				out.Sites = append(out.Sites, s)
				found = true
			}
		}
		if !found {
			return Topology{}, fmt.Errorf("subset: unknown site %q", n)
		}
		keep[n] = true
	}
	for k, p := range t.Links {
		if keep[k.From] && keep[k.To] {
			out.Links[k] = p.Clone()
		}
	}
	return out, nil
}
