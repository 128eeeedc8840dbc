package events

import (
	"fmt"
	"strings"
	"time"
)

// The constructors below are the one place that decides each kind's summary
// and details, so every emitter words the same fact the same way. at is when
// the fact happened; the labels come from the emitter.

// Probe returns the labels of a probe series, as on /metrics.
func Probe(sourceSite, targetSite, target, path, segment, protocol, port string) Labels {
	return Labels{SourceSite: sourceSite, TargetSite: targetSite, Target: target, Path: path,
		Segment: segment, Protocol: protocol, Port: port}
}

// series names a probe series in a summary: "us-east → ap-tokyo 10.77.5.1
// (sitelink/prod icmp)".
func (l Labels) series() string {
	proto := l.Protocol
	if l.Port != "" {
		proto += "/" + l.Port
	}
	return fmt.Sprintf("%s → %s %s (%s/%s %s)", l.SourceSite, l.TargetSite, l.Target, l.Path, l.Segment, proto)
}

func secs(d time.Duration) float64 { return d.Seconds() }

// ms formats an RTT for a summary.
func ms(d time.Duration) string {
	return fmt.Sprintf("%.3g ms", float64(d)/float64(time.Millisecond))
}

// NewTargetDown: the target stopped answering (probed_target_up went 0
// after lostInARow consecutive losses).
func NewTargetDown(at time.Time, l Labels, lostInARow int) Event {
	return Event{Time: at, Kind: TargetDown, Labels: l,
		Summary: fmt.Sprintf("%s down after %d lost probes", l.series(), lostInARow),
		Details: map[string]any{"lost_in_a_row": lostInARow}}
}

// NewTargetDownUnsent: the target went down over a run of inARow slots of
// which unsent could not send a probe (the name does not resolve, the
// socket cannot be bound): the agent, not the network, may be the cause.
func NewTargetDownUnsent(at time.Time, l Labels, inARow, unsent int) Event {
	return Event{Time: at, Kind: TargetDown, Labels: l,
		Summary: fmt.Sprintf("%s down after %d probes without an answer, %d of them not sent (name not resolved or socket not bound)",
			l.series(), inARow, unsent),
		Details: map[string]any{"lost_in_a_row": inARow, "unsent": unsent}}
}

// NewTargetUp: the target answers again; downFor is how long it was down
// (0 if unknown).
func NewTargetUp(at time.Time, l Labels, downFor time.Duration) Event {
	s := fmt.Sprintf("%s up", l.series())
	d := map[string]any{}
	if downFor > 0 {
		s += fmt.Sprintf(" after %s down", downFor.Round(time.Second))
		d["down_seconds"] = secs(downFor)
	}
	return Event{Time: at, Kind: TargetUp, Labels: l, Summary: s, Details: d}
}

// NewLossStarted: a loss episode began with lost of the last window probes
// lost (see changepoint.Loss). at is the first lost probe of the episode.
func NewLossStarted(at time.Time, l Labels, lost, window int) Event {
	return Event{Time: at, Kind: LossStarted, Labels: l,
		Summary: fmt.Sprintf("%s loss started: %d of %d probes lost", l.series(), lost, window),
		Details: map[string]any{"lost": lost, "window": window}}
}

// NewLossEnded: the loss episode that began at started is over; lost of
// sent probes were lost during it. at is the last lost probe.
func NewLossEnded(at time.Time, l Labels, started time.Time, lost, sent int) Event {
	d := at.Sub(started)
	ratio := 0.0
	if sent > 0 {
		ratio = float64(lost) / float64(sent)
	}
	return Event{Time: at, Kind: LossEnded, Labels: l,
		Summary: fmt.Sprintf("%s loss ended after %s: %d of %d probes lost (%.1f%%)", l.series(), d.Round(time.Second), lost, sent, 100*ratio),
		Details: map[string]any{"started": started.UTC().Format(time.RFC3339Nano), "duration_seconds": secs(d),
			"lost": lost, "sent": sent, "loss_ratio": ratio}}
}

// NewLatencyShift: the pair's median RTT moved from before to after. at is
// the estimated onset; detected is when the detector was sure of it.
func NewLatencyShift(at time.Time, l Labels, before, after time.Duration, detected time.Time) Event {
	sign := "+"
	if after < before {
		sign = ""
	}
	return Event{Time: at, Kind: LatencyShift, Labels: l,
		Summary: fmt.Sprintf("%s median RTT %s → %s (%s%s)", l.series(), ms(before), ms(after), sign, ms(after-before)),
		Details: map[string]any{"before_seconds": secs(before), "after_seconds": secs(after),
			"detected": detected.UTC().Format(time.RFC3339Nano)}}
}

// NewPathChanged: the traced hop list changed (hops as in probed_path_info,
// "*" for silent hops).
func NewPathChanged(at time.Time, l Labels, oldHops, newHops []string) Event {
	return Event{Time: at, Kind: PathChanged, Labels: l,
		Summary: fmt.Sprintf("%s path changed: %d → %d hops (%s → %s)", l.series(), len(oldHops), len(newHops),
			strings.Join(oldHops, ","), strings.Join(newHops, ",")),
		Details: map[string]any{"old": strs(oldHops), "new": strs(newHops)}}
}

// NewMTUChanged: the path MTU found by the DF search changed.
func NewMTUChanged(at time.Time, l Labels, oldBytes, newBytes int) Event {
	return Event{Time: at, Kind: MTUChanged, Labels: l,
		Summary: fmt.Sprintf("%s path MTU %d → %d bytes", l.series(), oldBytes, newBytes),
		Details: map[string]any{"old_bytes": oldBytes, "new_bytes": newBytes}}
}

// NewMTUBlackholeStarted: packets of sizeBytes vanish without Fragmentation
// Needed / Packet Too Big.
func NewMTUBlackholeStarted(at time.Time, l Labels, sizeBytes int) Event {
	return Event{Time: at, Kind: MTUBlackholeStarted, Labels: l,
		Summary: fmt.Sprintf("%s MTU black hole: %d-byte packets vanish without an ICMP error", l.series(), sizeBytes),
		Details: map[string]any{"size_bytes": sizeBytes}}
}

// NewMTUBlackholeEnded: the path reports its limit again (or carries the
// largest size); mtuBytes is the MTU found.
func NewMTUBlackholeEnded(at time.Time, l Labels, mtuBytes int) Event {
	return Event{Time: at, Kind: MTUBlackholeEnded, Labels: l,
		Summary: fmt.Sprintf("%s MTU black hole ended, path MTU %d bytes", l.series(), mtuBytes),
		Details: map[string]any{"mtu_bytes": mtuBytes}}
}

// NewDSCPRemarked: STAMP saw another DSCP arrive than was sent, in
// direction (forward, reverse).
func NewDSCPRemarked(at time.Time, l Labels, direction string, sent, received int) Event {
	return Event{Time: at, Kind: DSCPRemarked, Labels: l,
		Summary: fmt.Sprintf("%s DSCP re-marked %s: sent %d, arrived %d", l.series(), direction, sent, received),
		Details: map[string]any{"direction": direction, "sent_dscp": sent, "received_dscp": received}}
}

// NewDSCPRestored: the DSCP arrives as sent again in direction.
func NewDSCPRestored(at time.Time, l Labels, direction string) Event {
	return Event{Time: at, Kind: DSCPRestored, Labels: l,
		Summary: fmt.Sprintf("%s DSCP arrives unchanged %s again", l.series(), direction),
		Details: map[string]any{"direction": direction}}
}

// NewSegmentationViolation: a guard target (expect: unreachable) answers.
func NewSegmentationViolation(at time.Time, l Labels) Event {
	return Event{Time: at, Kind: SegmentationViolation, Labels: l,
		Summary: fmt.Sprintf("%s segmentation violation: the guard answers", l.series())}
}

// NewSegmentationRestored: the guard is silent again.
func NewSegmentationRestored(at time.Time, l Labels) Event {
	return Event{Time: at, Kind: SegmentationRestored, Labels: l,
		Summary: fmt.Sprintf("%s segmentation restored: the guard is silent", l.series())}
}

// NewSTAMPLossStarted: STAMP started losing packets in direction (forward:
// sender → reflector, reverse); lost of sent in the window that showed it.
func NewSTAMPLossStarted(at time.Time, l Labels, direction string, lost, sent int) Event {
	return Event{Time: at, Kind: STAMPLossStarted, Labels: l,
		Summary: fmt.Sprintf("%s STAMP %s loss: %d of %d lost", l.series(), direction, lost, sent),
		Details: map[string]any{"direction": direction, "lost": lost, "sent": sent}}
}

// NewDXConnectionChanged: a Direct Connect connection's state changed.
// Labels: connection_id, site, region.
func NewDXConnectionChanged(at time.Time, l Labels, name, from, to string) Event {
	return Event{Time: at, Kind: DXConnectionChanged, Labels: l,
		Summary: fmt.Sprintf("DX connection %s%s (%s) %s → %s", l.ConnectionID, paren(name), l.Site, orNone(from), to),
		Details: map[string]any{"name": name, "from": from, "to": to}}
}

// NewDXVIFChanged: a virtual interface's state changed. Labels: vif_id,
// connection_id, site, segment, region.
func NewDXVIFChanged(at time.Time, l Labels, name, from, to string) Event {
	return Event{Time: at, Kind: DXVIFChanged, Labels: l,
		Summary: fmt.Sprintf("VIF %s%s (%s/%s) %s → %s", l.VIFID, paren(name), l.Site, l.Segment, orNone(from), to),
		Details: map[string]any{"name": name, "from": from, "to": to}}
}

// NewBGPPeerChanged: a BGP session's bgpStatus changed (up, down, unknown).
// Labels: vif_id, bgp_peer_id, site, segment, region.
func NewBGPPeerChanged(at time.Time, l Labels, peerAddress, from, to string) Event {
	return Event{Time: at, Kind: BGPPeerChanged, Labels: l,
		Summary: fmt.Sprintf("BGP peer %s on %s (%s/%s) %s → %s", peerAddress, l.VIFID, l.Site, l.Segment, orNone(from), to),
		Details: map[string]any{"peer_address": peerAddress, "from": from, "to": to}}
}

// NewMACsecChanged: MACsec on a connection went up or down; status is the
// raw portEncryptionStatus. Labels: connection_id, site, region.
func NewMACsecChanged(at time.Time, l Labels, mode string, up bool, status string) Event {
	word := "down"
	if up {
		word = "up"
	}
	return Event{Time: at, Kind: MACsecChanged, Labels: l,
		Summary: fmt.Sprintf("MACsec on %s (%s) %s: %s", l.ConnectionID, l.Site, word, status),
		Details: map[string]any{"encryption_mode": mode, "up": up, "status": status}}
}

// NewNSMHealthChanged: AWS's Network Synthetic Monitor health indicator for
// a probe changed. Labels: monitor, probe_id, site, segment, region.
func NewNSMHealthChanged(at time.Time, l Labels, degraded bool) Event {
	word := "healthy"
	if degraded {
		word = "degraded (AWS side)"
	}
	return Event{Time: at, Kind: NSMHealthChanged, Labels: l,
		Summary: fmt.Sprintf("NSM %s probe %s %s", l.Monitor, l.ProbeID, word),
		Details: map[string]any{"degraded": degraded}}
}

// NewAWSPollFailed: polling an AWS service in a region started failing;
// outcome as in probed_aws_api_requests_total ("" when only the error
// message is known). Labels: service, region, account, site (the agent's).
func NewAWSPollFailed(at time.Time, l Labels, outcome, message string) Event {
	// The SDK's messages end with what AWS said ("api error
	// AccessDeniedException: …"): the part worth a summary, after the
	// outcome class when there is one.
	why := message
	if i := strings.LastIndex(why, "api error "); i >= 0 {
		why = why[i+len("api error "):]
	}
	if r := []rune(why); len(r) > 160 {
		why = string(r[:160]) + "…"
	}
	switch {
	case why == "":
		why = outcome
	case outcome != "":
		why = outcome + " (" + why + ")"
	}
	return Event{Time: at, Kind: AWSPollFailed, Labels: l,
		Summary: fmt.Sprintf("AWS %s polling failing in %s: %s", l.Service, l.Region, why),
		Details: map[string]any{"outcome": outcome, "message": message}}
}

// NewAWSPollRecovered: polling succeeds again after failing for failedFor.
func NewAWSPollRecovered(at time.Time, l Labels, failedFor time.Duration) Event {
	return Event{Time: at, Kind: AWSPollRecovered, Labels: l,
		Summary: fmt.Sprintf("AWS %s polling recovered in %s after %s", l.Service, l.Region, failedFor.Round(time.Second)),
		Details: map[string]any{"failed_seconds": secs(failedFor)}}
}

// NewConfigReloaded: the mesh file was reloaded; added, removed and changed
// name probe series or settings (free text, one per entry).
func NewConfigReloaded(at time.Time, site string, added, removed, changed []string) Event {
	return Event{Time: at, Kind: ConfigReloaded, Labels: Labels{Site: site},
		Summary: fmt.Sprintf("configuration reloaded: %d added, %d removed, %d changed", len(added), len(removed), len(changed)),
		Details: map[string]any{"added": strs(added), "removed": strs(removed), "changed": strs(changed)}}
}

// NewAgentStarted: the agent started (version is the build's).
func NewAgentStarted(at time.Time, site, version string) Event {
	return Event{Time: at, Kind: AgentStarted, Labels: Labels{Site: site},
		Summary: fmt.Sprintf("agent started (version %s)", version),
		Details: map[string]any{"version": version}}
}

// NewAgentStopped: the agent is stopping (reason: "SIGTERM", …).
func NewAgentStopped(at time.Time, site, reason string) Event {
	return Event{Time: at, Kind: AgentStopped, Labels: Labels{Site: site},
		Summary: fmt.Sprintf("agent stopping: %s", reason),
		Details: map[string]any{"reason": reason}}
}

// strs keeps nil lists as [] in the JSON.
func strs(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func paren(s string) string {
	if s == "" {
		return ""
	}
	return " " + s
}

func orNone(s string) string {
	if s == "" {
		return "(new)"
	}
	return s
}
