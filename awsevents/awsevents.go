// Package awsevents turns successive AWS snapshots (awsstate) into events —
// connection, VIF, BGP, MACsec and NSM health transitions, polling failing
// and recovering — and remembers when each resource's state last changed,
// for the status API's "since" times. Wiring is one call per poll round:
//
//	for _, e := range tracker.Update(poller.Snapshot()) { journal.Emit(e) }
package awsevents

import (
	"maps"
	"strings"
	"sync"
	"time"

	"github.com/probed/probed/awsstate"
	"github.com/probed/probed/events"
	"github.com/probed/probed/status"
)

// Tracker remembers the last state of every resource it has seen. Resources
// that drop out of a snapshot (stale, or out of scope) are remembered, so
// they do not read as new when they come back. Memory: about 200 bytes per
// resource ever seen. Safe for concurrent use.
type Tracker struct {
	site    string
	started time.Time

	mu sync.Mutex
	// polled: the sources (service/region) the tracker has seen answer.
	// A resource first seen in the first good answer of its source is the
	// starting state, not news: every region and service answers for the
	// first time at its own moment after the agent starts.
	polled  map[string]bool
	conns   map[string]*seen // connection state, by connection ID
	macsec  map[string]*seen // "up"/"down", by connection ID
	vifs    map[string]*seen // VIF state, by VIF ID
	peers   map[string]*seen // bgpStatus, by VIF ID + "/" + peer ID
	nsm     map[string]*seen // "degraded"/"healthy", by monitor + "/" + probe ID
	regions map[string]*seen // "up"/"down", by service/account/region
}

type seen struct {
	state string
	since time.Time
}

// New returns a tracker for the agent of site, started at started (the
// earliest "since" it reports: what happened before the agent ran is not
// known).
func New(site string, started time.Time) *Tracker {
	return &Tracker{site: site, started: started, polled: map[string]bool{},
		conns: map[string]*seen{}, macsec: map[string]*seen{}, vifs: map[string]*seen{},
		peers: map[string]*seen{}, nsm: map[string]*seen{}, regions: map[string]*seen{}}
}

// Update compares a snapshot with what the tracker knew and returns the
// transitions as events, stamped with the snapshot's time. The resources
// of a source (a service in a region) seen in its first good answer only
// seed the state: they hold no transitions, whenever that answer comes
// (the first snapshot, or a region that answers after failing at first).
// A resource that first appears later is reported as new (from "").
func (t *Tracker) Update(s *awsstate.Snapshot) []events.Event {
	if s == nil {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	at := s.Taken
	var out []events.Event
	known := maps.Clone(t.polled)
	for _, r := range s.Regions {
		if r.Up {
			t.polled[r.Service+"/"+r.Region] = true
		}
	}
	// change records the new state and says whether it is a transition to
	// report (and the previous state). src is the resource's source.
	change := func(m map[string]*seen, key, state, src string) (string, bool) {
		old, ok := m[key]
		if !ok {
			since := at
			if !known[src] {
				since = t.started
			}
			m[key] = &seen{state: state, since: since}
			return "", known[src]
		}
		if old.state == state {
			return old.state, false
		}
		prev := old.state
		old.state, old.since = state, at
		return prev, true
	}

	for _, r := range s.Regions {
		st := "up"
		if !r.Up {
			st = "down"
		}
		key := r.Service + "/" + r.Account + "/" + r.Region
		l := events.Labels{Service: r.Service, Account: r.Account, Region: r.Region, Site: t.site}
		old, ok := t.regions[key]
		switch {
		case !ok:
			t.regions[key] = &seen{state: st, since: at}
			if !r.Up {
				// Failing from its first poll: that is news
				// (credentials, permissions), not a steady state.
				out = append(out, events.NewAWSPollFailed(at, l, r.Outcome, r.LastError))
			}
		case old.state != st:
			failedSince := old.since
			old.state, old.since = st, at
			if r.Up {
				out = append(out, events.NewAWSPollRecovered(at, l, at.Sub(failedSince)))
			} else {
				out = append(out, events.NewAWSPollFailed(at, l, r.Outcome, r.LastError))
			}
		}
	}

	for _, c := range s.Connections {
		l := events.Labels{ConnectionID: c.ID, Site: c.Site, Region: c.Region}
		src := awsstate.ServiceDX + "/" + c.Region
		if from, ok := change(t.conns, c.ID, c.State, src); ok {
			out = append(out, events.NewDXConnectionChanged(at, l, c.Name, from, c.State))
		}
		if hasMACsec(c) {
			st := "down"
			if c.MACsecUp {
				st = "up"
			}
			if _, ok := change(t.macsec, c.ID, st, src); ok {
				out = append(out, events.NewMACsecChanged(at, l, c.EncryptionMode, c.MACsecUp, c.PortEncryptionStatus))
			}
		}
	}

	for _, v := range s.VIFs {
		l := events.Labels{VIFID: v.ID, ConnectionID: v.ConnectionID, Site: v.Site, Segment: v.Segment, Region: v.Region}
		src := awsstate.ServiceDX + "/" + v.Region
		if from, ok := change(t.vifs, v.ID, v.State, src); ok {
			out = append(out, events.NewDXVIFChanged(at, l, v.Name, from, v.State))
		}
		if v.PollFailed {
			// The sessions' state is unknown while polling fails: that is
			// the aws_poll_failed event, not a BGP transition. The last
			// known status is kept and compared after the recovery.
			continue
		}
		for _, p := range v.Peers {
			pl := l
			pl.ConnectionID = ""
			pl.BGPPeerID = p.ID
			if from, ok := change(t.peers, v.ID+"/"+p.ID, p.Status, src); ok {
				out = append(out, events.NewBGPPeerChanged(at, pl, p.CustomerAddress, from, p.Status))
			}
		}
	}

	probes := map[string]awsstate.NSMProbe{}
	for _, p := range s.Probes {
		probes[p.ID] = p
	}
	for _, d := range s.Metrics {
		if d.Kind != awsstate.NSMHealth {
			continue
		}
		p := probes[d.Resource]
		st := "healthy"
		if d.Value >= 1 {
			st = "degraded"
		}
		if _, ok := change(t.nsm, d.Monitor+"/"+d.Resource, st, awsstate.ServiceCloudWatch+"/"+p.Region); ok {
			out = append(out, events.NewNSMHealthChanged(at, events.Labels{Monitor: d.Monitor, ProbeID: d.Resource,
				Site: p.Site, Segment: p.Segment, Region: p.Region}, st == "degraded"))
		}
	}
	return out
}

func hasMACsec(c awsstate.Connection) bool {
	return c.EncryptionMode != "" && !strings.EqualFold(c.EncryptionMode, "no_encrypt")
}

// AWS converts a snapshot to the status API's AWS section, with the time of
// each resource's last change as far as the tracker knows (Update must
// have seen the snapshot; an unknown resource reads as changed now).
func (t *Tracker) AWS(s *awsstate.Snapshot) *status.AWS {
	if s == nil {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	since := func(m map[string]*seen, key string) *time.Time {
		v := s.Taken.UTC()
		if x, ok := m[key]; ok {
			v = x.since.UTC()
		}
		return &v
	}
	out := &status.AWS{Connections: []status.Connection{}, VIFs: []status.VIF{}, Sources: []status.Source{}}
	for _, c := range s.Connections {
		sc := status.Connection{ID: c.ID, Name: c.Name, Site: c.Site, Region: c.Region, Location: c.Location,
			State: c.State, Up: c.State == "available", Since: since(t.conns, c.ID)}
		if hasMACsec(c) {
			sc.MACsec = &status.MACsec{EncryptionMode: c.EncryptionMode, Status: c.PortEncryptionStatus, Up: c.MACsecUp,
				Since: since(t.macsec, c.ID)}
		}
		out.Connections = append(out.Connections, sc)
	}
	for _, v := range s.VIFs {
		sv := status.VIF{ID: v.ID, Name: v.Name, Site: v.Site, Segment: v.Segment, Region: v.Region, ConnectionID: v.ConnectionID,
			State: v.State, Up: v.State == "available", Since: since(t.vifs, v.ID), PollFailed: v.PollFailed, BGPPeers: []status.BGPPeer{}}
		for _, p := range v.Peers {
			bp := status.BGPPeer{ID: p.ID, AddressFamily: p.AddressFamily, PeerAddress: p.CustomerAddress,
				Status: p.Status, Up: p.Status == "up", Since: since(t.peers, v.ID+"/"+p.ID)}
			if v.PollFailed {
				// As on /metrics: never "up" while polling fails.
				bp.Status, bp.Up = "unknown", false
			}
			sv.BGPPeers = append(sv.BGPPeers, bp)
		}
		out.VIFs = append(out.VIFs, sv)
	}
	for _, src := range s.Sources {
		ss := status.Source{Name: src.Name, Up: src.Up}
		if !src.LastSuccess.IsZero() {
			ls := src.LastSuccess.UTC()
			ss.LastSuccess = &ls
		}
		out.Sources = append(out.Sources, ss)
	}
	return out
}
