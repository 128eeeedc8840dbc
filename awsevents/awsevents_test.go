package awsevents

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"

	"github.com/probed/probed/awsstate"
	"github.com/probed/probed/config"
	"github.com/probed/probed/events"
	"github.com/probed/probed/internal/awstest"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// setup runs the AWS test server and a real poller for site us-east, the
// SDK isolated from the machine.
func setup(t *testing.T) (*awstest.Server, *awsstate.Poller, *clock) {
	t.Helper()
	ck := &clock{t: time.Date(2026, 6, 1, 12, 0, 30, 0, time.UTC)}
	srv := awstest.New(nil, awstest.WithClock(ck.Now))
	url, err := srv.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	dir := t.TempDir()
	for k, v := range map[string]string{
		"AWS_CONFIG_FILE": filepath.Join(dir, "config"), "AWS_SHARED_CREDENTIALS_FILE": filepath.Join(dir, "credentials"),
		"AWS_EC2_METADATA_DISABLED": "true", "AWS_ACCESS_KEY_ID": "AKIDPROBEDTEST", "AWS_SECRET_ACCESS_KEY": "secret",
		"AWS_SESSION_TOKEN": "", "AWS_PROFILE": "", "AWS_REGION": "", "AWS_ENDPOINT_URL": url,
		"AWS_ENDPOINT_URL_DIRECT_CONNECT": "", "AWS_ENDPOINT_URL_NETWORKMONITOR": "", "AWS_ENDPOINT_URL_CLOUDWATCH": "", "AWS_ENDPOINT_URL_STS": "",
	} {
		t.Setenv(k, v)
	}
	base, err := os.ReadFile("../configs/example-mesh.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(append(base, []byte("\naws:\n  poll_all: false\n")...), "mesh.yaml")
	if err != nil {
		t.Fatal(err)
	}
	noSleep := awsconfig.WithRetryer(func() aws.Retryer {
		return retry.NewStandard(func(o *retry.StandardOptions) {
			o.MaxAttempts = 1
			o.Backoff = retry.BackoffDelayerFunc(func(int, error) (time.Duration, error) { return 0, nil })
		})
	})
	p, err := awsstate.New(context.Background(), awsstate.Options{Config: cfg.AWS, Sites: cfg.Sites, Site: "us-east",
		Now: ck.Now, LoadOptions: []func(*awsconfig.LoadOptions) error{noSleep}})
	if err != nil {
		t.Fatal(err)
	}
	return srv, p, ck
}

func kinds(evs []events.Event) []string {
	var out []string
	for _, e := range evs {
		out = append(out, string(e.Kind)+" "+e.Summary)
	}
	return out
}

func TestTransitions(t *testing.T) {
	srv, p, ck := setup(t)
	ctx := context.Background()
	started := ck.Now()
	tr := New("us-east", started)
	poll := func() []events.Event {
		ck.Add(time.Minute)
		p.PollOnce(ctx)
		return tr.Update(p.Snapshot())
	}
	if evs := poll(); len(evs) != 0 {
		t.Fatalf("the first snapshot is the starting state, not transitions: %v", kinds(evs))
	}
	if evs := poll(); len(evs) != 0 {
		t.Fatalf("nothing changed: %v", kinds(evs))
	}

	// BGP down, then up.
	srv.SetBGPStatus("dxvif-fp1k7x2q", "dxpeer-fp16k7x2q", "down")
	evs := poll()
	if len(evs) != 1 || evs[0].Kind != events.BGPPeerChanged || evs[0].Details["from"] != "up" || evs[0].Details["to"] != "down" ||
		evs[0].Labels.VIFID != "dxvif-fp1k7x2q" || evs[0].Labels.BGPPeerID != "dxpeer-fp16k7x2q" || evs[0].Labels.Site != "us-east" ||
		evs[0].Labels.Segment != "prod" || !evs[0].Time.Equal(ck.Now()) {
		t.Fatalf("BGP down: %+v", evs)
	}
	downAt := ck.Now()
	// The status says since when.
	aws := tr.AWS(p.Snapshot())
	var peerSince, vifSince time.Time
	for _, v := range aws.VIFs {
		if v.ID == "dxvif-fp1k7x2q" {
			vifSince = *v.Since
			for _, b := range v.BGPPeers {
				if b.ID == "dxpeer-fp16k7x2q" {
					peerSince = *b.Since
					if b.Up || b.Status != "down" {
						t.Errorf("status of the peer: %+v", b)
					}
				}
			}
		}
	}
	if !peerSince.Equal(downAt) || !vifSince.Equal(started) {
		t.Errorf("since: peer %v (want %v), VIF %v (want the agent's start %v)", peerSince, downAt, vifSince, started)
	}
	srv.SetBGPStatus("dxvif-fp1k7x2q", "dxpeer-fp16k7x2q", "up")
	if evs := poll(); len(evs) != 1 || evs[0].Details["to"] != "up" {
		t.Fatalf("BGP up: %v", kinds(evs))
	}

	// MACsec and the connection.
	srv.SetMACsec("dxcon-fh1k7x2q", false)
	srv.SetConnectionState("dxcon-fh1k7x2q", "down")
	got := kinds(poll())
	if len(got) < 2 || !strings.Contains(strings.Join(got, "\n"), "dx_connection_changed DX connection dxcon-fh1k7x2q") ||
		!strings.Contains(strings.Join(got, "\n"), "macsec_changed MACsec on dxcon-fh1k7x2q (us-east) down") {
		t.Fatalf("connection and MACsec down: %v", got)
	}
	srv.SetMACsec("dxcon-fh1k7x2q", true)
	srv.SetConnectionState("dxcon-fh1k7x2q", "available")
	poll()

	// Polling fails: one aws_poll_failed per failing service, no BGP
	// "unknown" transitions; on recovery, aws_poll_recovered and the BGP
	// change that happened meanwhile.
	srv.SetFault(awstest.DirectConnect, awstest.FaultAccessDenied, -1)
	evs = poll()
	if len(evs) != 1 || evs[0].Kind != events.AWSPollFailed || evs[0].Labels.Service != "directconnect" || evs[0].Labels.Region != "us-east-1" {
		t.Fatalf("polling failing: %v", kinds(evs))
	}
	if !strings.Contains(evs[0].Summary, "AccessDenied") {
		t.Errorf("the failure does not say why: %s", evs[0].Summary)
	}
	srv.SetBGPStatus("dxvif-fp1k7x2q", "dxpeer-fp14k7x2q", "down")
	if evs := poll(); len(evs) != 0 {
		t.Fatalf("still failing: %v", kinds(evs))
	}
	srv.SetFault(awstest.DirectConnect, "", 0)
	evs = poll()
	var recovered, bgp bool
	for _, e := range evs {
		switch e.Kind {
		case events.AWSPollRecovered:
			recovered = e.Details["failed_seconds"] == (2 * time.Minute).Seconds()
		case events.BGPPeerChanged:
			bgp = e.Labels.BGPPeerID == "dxpeer-fp14k7x2q" && e.Details["to"] == "down"
		}
	}
	if !recovered || !bgp {
		t.Fatalf("after recovery: %v", kinds(evs))
	}
}

func TestPollingFailingFromTheStart(t *testing.T) {
	srv, p, ck := setup(t)
	srv.SetFault(awstest.DirectConnect, awstest.FaultAccessDenied, -1)
	tr := New("us-east", ck.Now())
	p.PollOnce(context.Background())
	evs := tr.Update(p.Snapshot())
	if len(evs) != 1 || evs[0].Kind != events.AWSPollFailed {
		t.Fatalf("%v", kinds(evs))
	}
}

// Each source's first good answer is the starting state, whenever it
// comes: with poll_all, regions answer at their own moment after the
// start, and one failing at first answers later; none of that is news. A
// resource that appears after its source has answered is.
func TestStartingStatePerSource(t *testing.T) {
	t0 := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	tr := New("us-east", t0)
	peer := func(id, status string) awsstate.BGPPeer {
		return awsstate.BGPPeer{ID: id, Status: status, CustomerAddress: "169.254.0.1/30"}
	}
	east := awsstate.VIF{ID: "dxvif-east", Region: "us-east-1", Site: "us-east", Segment: "prod", State: "available",
		Peers: []awsstate.BGPPeer{peer("dxpeer-e", "up")}}
	west := awsstate.VIF{ID: "dxvif-west", Region: "us-west-1", Site: "us-west", Segment: "prod", State: "available",
		Peers: []awsstate.BGPPeer{peer("dxpeer-w", "down")}}
	region := func(r string, up bool) awsstate.RegionStatus {
		rs := awsstate.RegionStatus{Service: awsstate.ServiceDX, Region: r, Up: up}
		if !up {
			rs.LastError, rs.Outcome = "api error AccessDeniedException: no", "access_denied"
		}
		return rs
	}
	snap := func(i int, regions []awsstate.RegionStatus, vifs ...awsstate.VIF) *awsstate.Snapshot {
		return &awsstate.Snapshot{Taken: t0.Add(time.Duration(i) * time.Minute), Regions: regions, VIFs: vifs}
	}
	// us-east answers first; us-west fails at first (news), then answers:
	// its VIF and BGP session (down) are its starting state.
	if evs := tr.Update(snap(1, []awsstate.RegionStatus{region("us-east-1", true)}, east)); len(evs) != 0 {
		t.Fatalf("first answer: %v", evs)
	}
	evs := tr.Update(snap(2, []awsstate.RegionStatus{region("us-east-1", true), region("us-west-1", false)}, east))
	if len(evs) != 1 || evs[0].Kind != events.AWSPollFailed || evs[0].Details["outcome"] != "access_denied" ||
		!strings.Contains(evs[0].Summary, "access_denied (AccessDeniedException: no)") {
		t.Fatalf("us-west failing from its first poll: %v", evs)
	}
	evs = tr.Update(snap(3, []awsstate.RegionStatus{region("us-east-1", true), region("us-west-1", true)}, east, west))
	if len(evs) != 1 || evs[0].Kind != events.AWSPollRecovered {
		t.Fatalf("us-west's first answer: %v, want only the recovery", evs)
	}
	// Its starting state dates from the agent's start.
	st := tr.AWS(snap(3, nil, east, west))
	if !st.VIFs[1].Since.Equal(t0) || !st.VIFs[1].BGPPeers[0].Since.Equal(t0) {
		t.Errorf("since of a starting state: %v %v", st.VIFs[1].Since, st.VIFs[1].BGPPeers[0].Since)
	}
	// Later: a transition, and a VIF that is really new.
	west.Peers = []awsstate.BGPPeer{peer("dxpeer-w", "up")}
	fresh := awsstate.VIF{ID: "dxvif-new", Region: "us-east-1", Site: "us-east", Segment: "dev", State: "pending"}
	evs = tr.Update(snap(4, []awsstate.RegionStatus{region("us-east-1", true), region("us-west-1", true)}, east, west, fresh))
	var got []string
	for _, e := range evs {
		got = append(got, string(e.Kind)+" "+e.Summary)
	}
	if len(evs) != 2 || !strings.Contains(got[0], "bgp_peer_changed") || !strings.Contains(got[0], "down → up") ||
		!strings.Contains(got[1], "dx_vif_changed") || !strings.Contains(got[1], "(new) → pending") {
		t.Errorf("later: %q", got)
	}
}
