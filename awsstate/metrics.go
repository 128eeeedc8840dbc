package awsstate

import (
	"context"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch"
	cwtypes "github.com/aws/aws-sdk-go-v2/service/cloudwatch/types"
)

// Period of every query: DX data is stored at 1 minute, and 60 s serves
// NSM monitors aggregating at 30 s and at 60 s alike.
const metricPeriod = 60

// maxQueriesPerCall is GetMetricData's limit.
const maxQueriesPerCall = 500

// series is one query and where its answer goes.
type series struct {
	kind                    MetricKind
	resource, monitor       string
	site, segment           string // NSM probes' mapping
	direction, lane         string
	namespace, metric, stat string
	dims                    []cwtypes.Dimension
	scale                   float64
}

func (s *series) key() string {
	return fmt.Sprintf("%d|%s|%s|%s|%s", s.kind, s.monitor, s.resource, s.direction, s.lane)
}

func dim(kv ...string) []cwtypes.Dimension {
	d := make([]cwtypes.Dimension, 0, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		d = append(d, cwtypes.Dimension{Name: aws.String(kv[i]), Value: aws.String(kv[i+1])})
	}
	return d
}

// queries builds the batch for one region from its last known resources.
// Unit is never set: AWS/DX publishes units ("Boolean", "dBm") that are
// no CloudWatch StandardUnit, and a Unit mismatch returns no data.
func (p *Poller) queries(rs *regionState) []series {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []series
	for _, c := range rs.conns {
		d := dim("ConnectionId", c.ID)
		for _, dir := range [][2]string{{"egress", "Egress"}, {"ingress", "Ingress"}} {
			out = append(out,
				// AWS/DX counts bits; the exported unit is the base unit, bytes.
				series{kind: ConnBytesPerSecond, resource: c.ID, direction: dir[0], namespace: "AWS/DX", metric: "ConnectionBps" + dir[1], stat: "Average", dims: d, scale: 1.0 / 8},
				series{kind: ConnPacketsPerSecond, resource: c.ID, direction: dir[0], namespace: "AWS/DX", metric: "ConnectionPps" + dir[1], stat: "Average", dims: d, scale: 1})
		}
		out = append(out, series{kind: ConnErrors, resource: c.ID, namespace: "AWS/DX", metric: "ConnectionErrorCount", stat: "Sum", dims: d, scale: 1})
		lanes := rs.lanes[c.ID]
		for _, dir := range [][2]string{{"tx", "Tx"}, {"rx", "Rx"}} {
			if len(lanes) == 0 {
				out = append(out, series{kind: ConnLightLevel, resource: c.ID, direction: dir[0], namespace: "AWS/DX", metric: "ConnectionLightLevel" + dir[1], stat: "Average", dims: d, scale: 1})
			}
			for _, l := range lanes {
				out = append(out, series{kind: ConnLightLevel, resource: c.ID, direction: dir[0], lane: l, namespace: "AWS/DX",
					metric: "ConnectionLightLevel" + dir[1], stat: "Average", dims: dim("ConnectionId", c.ID, "OpticalLaneNumber", l), scale: 1})
			}
		}
	}
	for _, v := range rs.vifs {
		d := dim("ConnectionId", v.ConnectionID, "VirtualInterfaceId", v.ID)
		for _, dir := range [][2]string{{"egress", "Egress"}, {"ingress", "Ingress"}} {
			out = append(out,
				series{kind: VIFBytesPerSecond, resource: v.ID, direction: dir[0], namespace: "AWS/DX", metric: "VirtualInterfaceBps" + dir[1], stat: "Average", dims: d, scale: 1.0 / 8},
				series{kind: VIFPacketsPerSecond, resource: v.ID, direction: dir[0], namespace: "AWS/DX", metric: "VirtualInterfacePps" + dir[1], stat: "Average", dims: d, scale: 1})
		}
	}
	for _, pr := range rs.probes {
		d := dim("Monitor", pr.Monitor, "Probe", pr.ID)
		out = append(out,
			// RTT is published in microseconds, PacketLoss in percent.
			series{kind: NSMRTT, resource: pr.ID, monitor: pr.Monitor, site: pr.Site, segment: pr.Segment, namespace: "AWS/NetworkMonitor", metric: "RTT", stat: "Average", dims: d, scale: 1e-6},
			series{kind: NSMPacketLoss, resource: pr.ID, monitor: pr.Monitor, site: pr.Site, segment: pr.Segment, namespace: "AWS/NetworkMonitor", metric: "PacketLoss", stat: "Average", dims: d, scale: 0.01},
			series{kind: NSMHealth, resource: pr.ID, monitor: pr.Monitor, site: pr.Site, segment: pr.Segment, namespace: "AWS/NetworkMonitor", metric: "HealthIndicator", stat: "Maximum", dims: d, scale: 1})
	}
	return out
}

// pollMetrics reads the whole region's batch with one GetMetricData call
// (more only past 500 queries, or when CloudWatch paginates), keeps the
// newest datapoint per series, and drops series no longer polled.
func (p *Poller) pollMetrics(ctx context.Context, rs *regionState) error {
	qs := p.queries(rs)
	if len(qs) == 0 {
		return nil
	}
	now := p.now()
	// Whole minutes: the newest bucket is often still filling, and
	// re-reading an overlapping window lets late data land.
	end := now.Truncate(time.Minute).Add(time.Minute)
	start := end.Add(-p.cfg.MetricsLookback.D())
	newest := map[string]Datapoint{}
	var err error
	for lo := 0; lo < len(qs) && err == nil; lo += maxQueriesPerCall {
		hi := min(lo+maxQueriesPerCall, len(qs))
		in := &cloudwatch.GetMetricDataInput{StartTime: aws.Time(start), EndTime: aws.Time(end),
			ScanBy: cwtypes.ScanByTimestampDescending}
		for i, s := range qs[lo:hi] {
			in.MetricDataQueries = append(in.MetricDataQueries, cwtypes.MetricDataQuery{
				Id: aws.String(fmt.Sprintf("q%d", lo+i)), ReturnData: aws.Bool(true),
				MetricStat: &cwtypes.MetricStat{Period: aws.Int32(metricPeriod), Stat: aws.String(s.stat),
					Metric: &cwtypes.Metric{Namespace: aws.String(s.namespace), MetricName: aws.String(s.metric), Dimensions: s.dims}}})
		}
		pg := cloudwatch.NewGetMetricDataPaginator(rs.cw, in)
		for page := 0; pg.HasMorePages() && page < maxPages; page++ {
			out, e := pg.NextPage(ctx)
			if e != nil {
				err = fmt.Errorf("reading CloudWatch metrics (GetMetricData, %d queries): %w", hi-lo, e)
				break
			}
			for _, r := range out.MetricDataResults {
				var idx int
				if _, e := fmt.Sscanf(aws.ToString(r.Id), "q%d", &idx); e != nil || idx < 0 || idx >= len(qs) {
					continue
				}
				s := &qs[idx]
				for i := range r.Timestamps {
					if i >= len(r.Values) {
						break
					}
					k := s.key()
					if cur, ok := newest[k]; ok && !r.Timestamps[i].After(cur.Time) {
						continue
					}
					newest[k] = Datapoint{Kind: s.kind, Resource: s.resource, Monitor: s.monitor, Site: s.site, Segment: s.segment, Direction: s.direction,
						Lane: s.lane, Value: r.Values[i] * s.scale, Time: r.Timestamps[i]}
				}
			}
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		// Keep earlier points: they age out by their own timestamps.
		return err
	}
	keep := map[string]Datapoint{}
	for _, s := range qs {
		k := s.key()
		if d, ok := newest[k]; ok {
			keep[k] = d
		} else if d, ok := rs.points[k]; ok {
			keep[k] = d // no new data in the window: ages out on its own
		}
	}
	rs.points = keep
	return nil
}
