package netlab

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/probed/probed/internal/inet"
	"github.com/probed/probed/internal/testutil"
)

func TestDefaultTopologyFollowsFibreDistances(t *testing.T) {
	topo := DefaultTopology()
	if len(topo.Sites) != 7 {
		t.Fatalf("%d sites, want the 7 of configs/example-mesh.yaml", len(topo.Sites))
	}
	// Figures from the table in topology.go.
	for _, c := range []struct {
		a, b string
		want time.Duration
	}{
		{"us-east", "us-central", 13100 * time.Microsecond},
		{"us-east", "eu-frankfurt", 45900 * time.Microsecond},
		{"us-east", "ap-tokyo", 76200 * time.Microsecond},
		{"ap-singapore", "ap-sydney", 44200 * time.Microsecond},
		{"ap-sydney", "eu-frankfurt", 115500 * time.Microsecond},
	} {
		if got, _ := FibreDelay(c.a, c.b); got != c.want {
			t.Errorf("FibreDelay(%s, %s) = %v, want %v", c.a, c.b, got, c.want)
		}
	}
	if len(topo.Links) != 7*6*2 {
		t.Errorf("%d links, want %d (every directed pair, sitelink and mpls)", len(topo.Links), 7*6*2)
	}
	for k, p := range topo.Links {
		rev := topo.Links[LinkKey{k.To, k.From, k.Path}]
		if p.Delay != rev.Delay {
			t.Errorf("%v: %v one way, %v back; the default is symmetric", k, p.Delay, rev.Delay)
		}
		if k.Path != PathMPLS {
			continue
		}
		sl := topo.Links[LinkKey{k.From, k.To, PathSiteLink}].Delay
		// SiteLink is 15% lower than MPLS, to within the 0.1 ms rounding.
		if r := float64(sl) / float64(p.Delay); r < 0.84 || r > 0.86 {
			t.Errorf("%v: sitelink %v / mpls %v = %.3f, want ~0.85", k, sl, p.Delay, r)
		}
		if err := p.Validate(); err != nil {
			t.Errorf("%v: %v", k, err)
		}
	}
	sub, err := topo.Subset("us-east", "eu-frankfurt")
	if err != nil {
		t.Fatal(err)
	}
	if len(sub.Sites) != 2 || len(sub.Links) != 4 {
		t.Errorf("subset: %d sites %d links, want 2 and 4", len(sub.Sites), len(sub.Links))
	}
	if _, err := topo.Subset("mars"); err == nil {
		t.Error("subset with an unknown site: no error")
	}
}

func TestPathParamsValidate(t *testing.T) {
	bad := uint8(64)
	for _, p := range []PathParams{
		{Delay: -1}, {Jitter: -1}, {Loss: 1.5}, {Loss: -0.1}, {MTU: 20}, {MTU: TUNMTU + 1}, {DSCP: &bad}, {Hops: []netip.Addr{{}}},
	} {
		if err := p.Validate(); err == nil {
			t.Errorf("%+v: no error", p)
		}
	}
}

func TestICMPErrorsAndRewritesKeepChecksums(t *testing.T) {
	// A UDP/IPv4 packet with DF, TTL 3, TOS 0.
	pkt := make([]byte, 60)
	pkt[0], pkt[2], pkt[3], pkt[6], pkt[8], pkt[9] = 0x45, 0, 60, 0x40, 3, 17
	copy(pkt[12:], []byte{10, 77, 1, 1})
	copy(pkt[16:], []byte{10, 77, 3, 1})
	fixIPv4Checksum(pkt, 20)
	h, ok := parseIP(pkt)
	if !ok || h.v6 || !h.df || h.ttl != 3 || h.src != netip.MustParseAddr("10.77.1.1") {
		t.Fatalf("parse: %+v %v", h, ok)
	}
	setDSCP(pkt, &h, 46)
	if pkt[1] != 46<<2 || inet.Checksum(pkt[:20]) != 0 {
		t.Errorf("DSCP rewrite: TOS %#x, header checksum verifies to %#x (want 0)", pkt[1], inet.Checksum(pkt[:20]))
	}
	msg := icmpError(&h, pkt, netip.MustParseAddr("10.90.13.1"), icmp4DestUnreach, icmp4FragNeeded, 1400, 64)
	if inet.Checksum(msg[:20]) != 0 || inet.Checksum(msg[20:]) != 0 {
		t.Error("Frag Needed: a checksum does not verify")
	}
	if msg[20] != 3 || msg[21] != 4 || binary.BigEndian.Uint32(msg[24:]) != 1400 || string(msg[28:]) != string(pkt) {
		t.Errorf("Frag Needed: header % x", msg[20:28])
	}

	v6 := make([]byte, 48)
	v6[0], v6[6], v6[7] = 0x60, 17, 2
	src, dst := netip.MustParseAddr("fd77:1::1").As16(), netip.MustParseAddr("fd77:3::1").As16()
	copy(v6[8:], src[:])
	copy(v6[24:], dst[:])
	h6, _ := parseIP(v6)
	setDSCP(v6, &h6, 46)
	if tc := (v6[0]&0x0f)<<4 | v6[1]>>4; tc != 46<<2 {
		t.Errorf("IPv6 traffic class %#x, want %#x", tc, 46<<2)
	}
	te := icmpError(&h6, v6, netip.MustParseAddr("fd90:1:3::1"), icmp6TimeExceeded, 0, 0, 64)
	// Verify the ICMPv6 checksum with the pseudo-header.
	var sum uint32
	for i := 8; i < 40; i += 2 {
		sum += uint32(te[i])<<8 | uint32(te[i+1])
	}
	sum += uint32(len(te)-40) + protoICMPv6
	if ^inet.Fold(inet.Sum(sum, te[40:])) != 0 {
		t.Error("ICMPv6 Time Exceeded: checksum does not verify")
	}
}

func TestCleanStaleTouchesOnlyDeadLabNamespaces(t *testing.T) {
	testutil.RequireRoot(t)
	other := testutil.NewNetNS(t) // not a lab name: must survive
	stale := randomPrefix() + "stale"
	if out, err := exec.Command("ip", "netns", "add", stale).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", stale).Run() })
	live, err := createNetNS(randomPrefix() + "live")
	if err != nil {
		t.Fatal(err)
	}
	defer live.remove()

	removed, err := CleanStale()
	if err != nil {
		t.Fatal(err)
	}
	exists := func(n string) bool { _, err := os.Stat("/run/netns/" + n); return err == nil }
	if exists(stale) {
		t.Errorf("stale %s survived (removed: %v)", stale, removed)
	}
	if !exists(live.name) {
		t.Errorf("live lab namespace %s was removed", live.name)
	}
	if !exists(other.Name) {
		t.Errorf("non-lab namespace %s was removed", other.Name)
	}
	if err := live.remove(); err != nil {
		t.Fatal(err)
	}
	if exists(live.name) {
		t.Errorf("remove left %s", live.name)
	}
}

// TestCloseLeavesNothing checks that Close kills what runs inside the lab
// and that no thread keeps the packet threads' real-time policy afterwards
// (a reused thread would hand SCHED_FIFO to every process started from it).
func TestCloseLeavesNothing(t *testing.T) {
	topo, err := DefaultTopology().Subset("us-east")
	if err != nil {
		t.Fatal(err)
	}
	lab := StartT(t, topo)
	cmd := lab.Site("us-east").Command(context.Background(), "sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	ns := lab.Site("us-east").NetNS()
	if err := lab.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-waited:
	case <-time.After(5 * time.Second):
		t.Fatalf("a process inside %s survived Close", ns)
	}
	if _, err := os.Stat("/run/netns/" + ns); err == nil {
		t.Errorf("namespace %s survived Close", ns)
	}
	for i := range 50 {
		c := exec.Command("sleep", "5")
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.Process.Pid))
		_ = c.Process.Kill()
		_ = c.Wait()
		if err != nil {
			t.Fatal(err)
		}
		// Field 41 (policy) counted after the ")" closing the command name.
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
		if f[41-3] != "0" {
			t.Fatalf("child %d started after Close runs with scheduling policy %s, want 0 (SCHED_OTHER)", i, f[41-3])
		}
	}
}
