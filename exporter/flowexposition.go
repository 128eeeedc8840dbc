package exporter

import (
	"strconv"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"
)

// The per-target series of targets probed over several flows (flows.go):
// a handful per target whatever the number of flows, plus the per-flow
// series of targets with flow_series.
const (
	helpFlows       = "Flow identities (ICMP identifiers, TCP source ports) the target's probes take turns on (flows:); 1 where ICMP runs over ping sockets."
	helpMemberPaths = "Distinct member paths (ECMP/LAG) the Paris traces of the target's flows found; absent until they were traced. LAG members are one layer-3 path."
	helpFlowsLossy  = "Flows whose loss the last test found concentrated (ecmp.Test at alpha 1e-6 over the flow window): lossy flows while the others are not; 0 when loss is even or absent."
	helpWorstFlow   = "Loss ratio of the target's worst flow over the flow window."
	helpSuspect     = "Suspect hop of a lossy member path: its first hop (TTL, address) that no healthy member path goes through, and the last shared hop before it (previous). Present while loss concentrates on that path."
	helpFlowSent    = "Probes of one flow that finished (flow_series)."
	helpFlowLost    = "Probes of one flow that the network lost (flow_series)."
	helpFlowRTT     = "Mean round-trip time of one flow's answered probes over the flow window (flow_series)."
)

func anyFlows(snaps []snapshot) (flows, series bool) {
	for i := range snaps {
		if snaps[i].flow.have {
			flows = true
			if snaps[i].flow.series != nil {
				series = true
			}
		}
	}
	return flows, series
}

// flowLabel is `,flow="i"`.
func flowLabel(i int) string { return `,flow="` + strconv.Itoa(i) + `"` }

func writeFlowText(header func(name, help, typ string), line func(name, labels, extra string, v []byte),
	u func(uint64) []byte, f func(float64) []byte, snaps []snapshot) {
	flows, series := anyFlows(snaps)
	if !flows {
		return
	}
	header("probed_flows", helpFlows, "gauge")
	for i := range snaps {
		if s := &snaps[i]; s.flow.have {
			line("probed_flows", s.r.labels, "", u(uint64(s.flow.flows)))
		}
	}
	header("probed_flow_member_paths", helpMemberPaths, "gauge")
	for i := range snaps {
		if s := &snaps[i]; s.flow.have && s.flow.paths >= 0 {
			line("probed_flow_member_paths", s.r.labels, "", u(uint64(s.flow.paths)))
		}
	}
	header("probed_flows_lossy", helpFlowsLossy, "gauge")
	for i := range snaps {
		if s := &snaps[i]; s.flow.have {
			line("probed_flows_lossy", s.r.labels, "", u(uint64(s.flow.lossy)))
		}
	}
	header("probed_flow_worst_loss_ratio", helpWorstFlow, "gauge")
	for i := range snaps {
		if s := &snaps[i]; s.flow.haveWorst {
			line("probed_flow_worst_loss_ratio", s.r.labels, "", f(s.flow.worst))
		}
	}
	header("probed_flow_suspect_hop_info", helpSuspect, "gauge")
	for i := range snaps {
		s := &snaps[i]
		if s.flow.lossy == 0 {
			continue
		}
		for _, sp := range s.flow.suspects {
			line("probed_flow_suspect_hop_info", s.r.labels, sp.labels, u(1))
		}
	}
	if !series {
		return
	}
	header("probed_flow_probes_sent_total", helpFlowSent, "counter")
	for i := range snaps {
		s := &snaps[i]
		for j, fs := range s.flow.series {
			line("probed_flow_probes_sent_total", s.r.labels, flowLabel(j), u(fs.sent))
		}
	}
	header("probed_flow_probes_lost_total", helpFlowLost, "counter")
	for i := range snaps {
		s := &snaps[i]
		for j, fs := range s.flow.series {
			line("probed_flow_probes_lost_total", s.r.labels, flowLabel(j), u(fs.lost))
		}
	}
	header("probed_flow_rtt_seconds", helpFlowRTT, "gauge")
	for i := range snaps {
		s := &snaps[i]
		for j, fs := range s.flow.series {
			if fs.rtt >= 0 {
				line("probed_flow_rtt_seconds", s.r.labels, flowLabel(j), f(fs.rtt))
			}
		}
	}
}

// flowFamilies are the same families as protobuf messages.
func flowFamilies(snaps []snapshot) []*dto.MetricFamily {
	if flows, _ := anyFlows(snaps); !flows {
		return nil
	}
	fam := func(name, help string, t dto.MetricType) *dto.MetricFamily {
		return &dto.MetricFamily{Name: proto.String(name), Help: proto.String(help), Type: t.Enum()}
	}
	gauge := func(pairs []*dto.LabelPair, v float64) *dto.Metric {
		return &dto.Metric{Label: pairs, Gauge: &dto.Gauge{Value: proto.Float64(v)}}
	}
	counter := func(pairs []*dto.LabelPair, v uint64) *dto.Metric {
		return &dto.Metric{Label: pairs, Counter: &dto.Counter{Value: proto.Float64(float64(v))}}
	}
	with := func(p []*dto.LabelPair, kv ...string) []*dto.LabelPair {
		out := append([]*dto.LabelPair{}, p...)
		for i := 0; i+1 < len(kv); i += 2 {
			out = append(out, &dto.LabelPair{Name: proto.String(kv[i]), Value: proto.String(kv[i+1])})
		}
		return out
	}
	n := fam("probed_flows", helpFlows, dto.MetricType_GAUGE)
	paths := fam("probed_flow_member_paths", helpMemberPaths, dto.MetricType_GAUGE)
	lossy := fam("probed_flows_lossy", helpFlowsLossy, dto.MetricType_GAUGE)
	worst := fam("probed_flow_worst_loss_ratio", helpWorstFlow, dto.MetricType_GAUGE)
	susp := fam("probed_flow_suspect_hop_info", helpSuspect, dto.MetricType_GAUGE)
	sent := fam("probed_flow_probes_sent_total", helpFlowSent, dto.MetricType_COUNTER)
	lost := fam("probed_flow_probes_lost_total", helpFlowLost, dto.MetricType_COUNTER)
	rtt := fam("probed_flow_rtt_seconds", helpFlowRTT, dto.MetricType_GAUGE)
	for i := range snaps {
		s := &snaps[i]
		if !s.flow.have {
			continue
		}
		p := s.r.pairs
		n.Metric = append(n.Metric, gauge(p, float64(s.flow.flows)))
		if s.flow.paths >= 0 {
			paths.Metric = append(paths.Metric, gauge(p, float64(s.flow.paths)))
		}
		lossy.Metric = append(lossy.Metric, gauge(p, float64(s.flow.lossy)))
		if s.flow.haveWorst {
			worst.Metric = append(worst.Metric, gauge(p, s.flow.worst))
		}
		if s.flow.lossy > 0 {
			for _, sp := range s.flow.suspects {
				susp.Metric = append(susp.Metric, gauge(with(p, "hop", sp.hop, "address", sp.addr, "previous", sp.prev), 1))
			}
		}
		for j, fs := range s.flow.series {
			fl := with(p, "flow", strconv.Itoa(j))
			sent.Metric = append(sent.Metric, counter(fl, fs.sent))
			lost.Metric = append(lost.Metric, counter(fl, fs.lost))
			if fs.rtt >= 0 {
				rtt.Metric = append(rtt.Metric, gauge(fl, fs.rtt))
			}
		}
	}
	return []*dto.MetricFamily{n, paths, lossy, worst, susp, sent, lost, rtt}
}
