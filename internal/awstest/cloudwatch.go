package awstest

import (
	"fmt"
	"hash/fnv"
	"math"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/aws/smithy-go/encoding/cbor"
)

// CloudWatch namespaces the server publishes.
const (
	NamespaceDX  = "AWS/DX"
	NamespaceNSM = "AWS/NetworkMonitor"
)

const (
	listMetricsPageMax = 500
	maxQueries         = 500
	maxDatapoints      = 100800
)

var queryIDRE = regexp.MustCompile(`^[a-z][a-zA-Z0-9_]*$`)

// cborMap is a response body under construction; toCBOR converts it.
type cborMap map[string]any

func toCBOR(v any) cbor.Value {
	switch x := v.(type) {
	case cbor.Value:
		return x
	case cborMap:
		m := cbor.Map{}
		for k, e := range x {
			m[k] = toCBOR(e)
		}
		return m
	case string:
		return cbor.String(x)
	case float64:
		return cbor.Float64(x)
	case int:
		if x < 0 {
			return cbor.NegInt(uint64(-x - 1))
		}
		return cbor.Uint(uint64(x))
	case bool:
		return cbor.Bool(x)
	case time.Time:
		return &cbor.Tag{ID: 1, Value: cbor.Float64(float64(x.UnixMilli()) / 1e3)}
	case []any:
		l := make(cbor.List, len(x))
		for i, e := range x {
			l[i] = toCBOR(e)
		}
		return l
	}
	panic(fmt.Sprintf("awstest: cannot encode %T as CBOR", v))
}

func writeCBOR(w http.ResponseWriter, status int, body cborMap) {
	data := cbor.Encode(toCBOR(body))
	w.Header().Set("Smithy-Protocol", "rpc-v2-cbor")
	w.Header().Set("Content-Type", "application/cbor")
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	w.WriteHeader(status)
	w.Write(data)
}

// metricID is one metric in the server's universe.
type metricID struct {
	namespace, name string
	dims            [][2]string // sorted by name
}

func (m metricID) dimKey() string {
	s := make([]string, len(m.dims))
	for i, d := range m.dims {
		s[i] = d[0] + "=" + d[1]
	}
	return strings.Join(s, ",")
}

func (m metricID) key() string { return m.namespace + "|" + m.name + "|" + m.dimKey() }

func newMetric(ns, name string, dims ...[2]string) metricID {
	sort.Slice(dims, func(i, j int) bool { return dims[i][0] < dims[j][0] })
	return metricID{ns, name, dims}
}

// universe lists every metric that exists in region (caller holds s.mu).
func (s *Server) universe(region string) []metricID {
	var out []metricID
	for _, c := range s.fx.Connections {
		if c.Region != region || c.State == "deleted" {
			continue
		}
		d := [2]string{"ConnectionId", c.ID}
		for _, n := range []string{"ConnectionState", "ConnectionBpsEgress", "ConnectionBpsIngress",
			"ConnectionPpsEgress", "ConnectionPpsIngress", "ConnectionErrorCount"} {
			out = append(out, newMetric(NamespaceDX, n, d))
		}
		if c.EncryptionMode != "" && c.EncryptionMode != "no_encrypt" {
			out = append(out, newMetric(NamespaceDX, "ConnectionEncryptionState", d))
		}
		for _, n := range []string{"ConnectionLightLevelTx", "ConnectionLightLevelRx"} {
			if c.Lanes == 0 {
				out = append(out, newMetric(NamespaceDX, n, d))
			}
			for l := 1; l <= c.Lanes; l++ {
				out = append(out, newMetric(NamespaceDX, n, d, [2]string{"OpticalLaneNumber", strconv.Itoa(l)}))
			}
		}
	}
	for _, v := range s.fx.VIFs {
		if v.Region != region || v.State == "deleted" {
			continue
		}
		for _, n := range []string{"VirtualInterfaceBpsEgress", "VirtualInterfaceBpsIngress", "VirtualInterfacePpsEgress", "VirtualInterfacePpsIngress"} {
			out = append(out, newMetric(NamespaceDX, n, [2]string{"ConnectionId", v.ConnectionID}, [2]string{"VirtualInterfaceId", v.ID}))
		}
	}
	for _, m := range s.fx.Monitors {
		if m.Region != region {
			continue
		}
		for _, p := range m.Probes {
			for _, n := range []string{"RTT", "PacketLoss", "HealthIndicator"} {
				out = append(out, newMetric(NamespaceNSM, n, [2]string{"Monitor", m.Name}, [2]string{"Probe", p.ID}))
			}
		}
	}
	return out
}

func hash(s string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(s))
	return h.Sum32()
}

// value generates a datapoint: plausible, deterministic, and following the
// fixture's current state (a down connection reads 0 and carries no traffic).
func (s *Server) value(m metricID, t time.Time) float64 {
	if v, ok := s.metrics[m.key()]; ok {
		return v
	}
	dim := map[string]string{}
	for _, d := range m.dims {
		dim[d[0]] = d[1]
	}
	h := hash(m.dimKey())
	wobble := 1 + 0.1*math.Sin(float64(t.Unix())/600+float64(h%7))
	conn := s.conn(dim["ConnectionId"])
	connUp := conn != nil && conn.State == "available"
	switch m.name {
	case "ConnectionState":
		return b2f(connUp)
	case "ConnectionEncryptionState":
		return b2f(conn != nil && conn.PortEncryptionStatus == "Encryption Up")
	case "ConnectionErrorCount":
		return 0
	case "ConnectionLightLevelTx", "ConnectionLightLevelRx":
		lane, _ := strconv.Atoi(dim["OpticalLaneNumber"])
		base := -1.5
		if m.name == "ConnectionLightLevelRx" {
			base = -3.2
		}
		if !connUp {
			return -40
		}
		return math.Round((base-0.1*float64(lane)-float64(h%5)/10)*100) / 100
	case "ConnectionBpsEgress", "ConnectionBpsIngress", "ConnectionPpsEgress", "ConnectionPpsIngress",
		"VirtualInterfaceBpsEgress", "VirtualInterfaceBpsIngress", "VirtualInterfacePpsEgress", "VirtualInterfacePpsIngress":
		if !connUp {
			return 0
		}
		if v := s.vif(dim["VirtualInterfaceId"]); v != nil && v.State != "available" {
			return 0
		}
		bps := 1e8 * float64(1+h%20) * wobble
		if strings.HasSuffix(m.name, "Ingress") {
			bps *= 0.8
		}
		if strings.Contains(m.name, "Pps") {
			return math.Round(bps / (8 * 700))
		}
		return math.Round(bps)
	case "RTT":
		return math.Round(1000 * float64(5+h%150) * wobble) // microseconds
	case "PacketLoss", "HealthIndicator":
		return 0
	}
	return 0
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (s *Server) cwError(c *call, status int, shape, query, format string, args ...any) {
	s.fail(c, status, shape, fmt.Sprintf(format, args...), query)
}

func (s *Server) cloudWatch(c *call) {
	if c.r.Header.Get("Smithy-Protocol") != "rpc-v2-cbor" || c.r.Method != http.MethodPost {
		s.cwError(c, http.StatusBadRequest, "SerializationException", "", "expected a POST with Smithy-Protocol: rpc-v2-cbor")
		return
	}
	var in cbor.Map
	if len(c.body) > 0 {
		v, err := cbor.Decode(c.body)
		if err != nil {
			s.cwError(c, http.StatusBadRequest, "SerializationException", "", "request body is not CBOR: %v", err)
			return
		}
		m, ok := v.(cbor.Map)
		if !ok {
			s.cwError(c, http.StatusBadRequest, "SerializationException", "", "request body is not a CBOR map")
			return
		}
		in = m
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch c.op {
	case "ListMetrics":
		s.listMetrics(c, in)
	case "GetMetricData":
		s.getMetricData(c, in)
	default:
		s.cwError(c, http.StatusBadRequest, "UnknownOperationException", "", "unknown operation %s", c.op)
	}
}

func str(v cbor.Value) string {
	if s, ok := v.(cbor.String); ok {
		return string(s)
	}
	return ""
}

func list(v cbor.Value) cbor.List {
	l, _ := v.(cbor.List)
	return l
}

func mapOf(v cbor.Value) cbor.Map {
	m, _ := v.(cbor.Map)
	return m
}

func dimsOf(v cbor.Value) [][2]string {
	var out [][2]string
	for _, d := range list(v) {
		m := mapOf(d)
		out = append(out, [2]string{str(m["Name"]), str(m["Value"])})
	}
	return out
}

func (s *Server) listMetrics(c *call, in cbor.Map) {
	ns, name := str(in["Namespace"]), str(in["MetricName"])
	filter := dimsOf(in["Dimensions"])
	scope := fmt.Sprintf("ListMetrics/%s/%s/%s/%v", c.region, ns, name, filter)
	cur, ok := parseToken(scope, str(in["NextToken"]))
	if !ok {
		s.cwError(c, http.StatusBadRequest, "InvalidNextToken", "InvalidNextToken;Sender", "The service returned an error with Error Code InvalidNextToken")
		return
	}
	var match []metricID
	for _, m := range s.universe(c.region) {
		if (ns != "" && m.namespace != ns) || (name != "" && m.name != name) {
			continue
		}
		all := true
		for _, f := range filter {
			found := false
			for _, d := range m.dims {
				if d[0] == f[0] && (f[1] == "" || d[1] == f[1]) {
					found = true
				}
			}
			all = all && found
		}
		if all {
			match = append(match, m)
		}
	}
	a, b, next := s.page(len(match), cur, 0, listMetricsPageMax)
	out := []any{}
	for _, m := range match[a:b] {
		dims := []any{}
		for _, d := range m.dims {
			dims = append(dims, cborMap{"Name": d[0], "Value": d[1]})
		}
		out = append(out, cborMap{"Namespace": m.namespace, "MetricName": m.name, "Dimensions": dims})
	}
	body := cborMap{"Metrics": out}
	if next != nil {
		body["NextToken"] = pageToken(scope, *next)
	}
	writeCBOR(c.w, http.StatusOK, body)
}

type point struct {
	q  int
	ts time.Time
	v  float64
}

func validPeriod(p int64) bool {
	switch p {
	case 1, 5, 10, 20, 30:
		return true
	}
	return p > 0 && p%60 == 0 && p <= 86400
}

func (s *Server) getMetricData(c *call, in cbor.Map) {
	queries := list(in["MetricDataQueries"])
	if len(queries) == 0 || len(queries) > maxQueries {
		s.cwError(c, http.StatusBadRequest, "InvalidParameterValueException", "InvalidParameterValue;Sender",
			"The collection MetricDataQueries must not be empty and must not contain more than %d items", maxQueries)
		return
	}
	start, err1 := cbor.AsTime(in["StartTime"])
	end, err2 := cbor.AsTime(in["EndTime"])
	if err1 != nil || err2 != nil {
		s.cwError(c, http.StatusBadRequest, "MissingRequiredParameterException", "MissingParameter;Sender", "StartTime and EndTime are required")
		return
	}
	if !end.After(start) {
		s.cwError(c, http.StatusBadRequest, "InvalidParameterValueException", "InvalidParameterValue;Sender", "The parameter StartTime must be less than the parameter EndTime.")
		return
	}
	pageMax := maxDatapoints
	if v, ok := in["MaxDatapoints"]; ok {
		n, err := cbor.AsInt64(v)
		if err != nil || n < 1 {
			s.cwError(c, http.StatusBadRequest, "InvalidParameterValueException", "InvalidParameterValue;Sender", "MaxDatapoints must be positive")
			return
		}
		pageMax = int(min(n, maxDatapoints))
	}
	ascending := str(in["ScanBy"]) == "TimestampAscending"

	universe := map[string]bool{}
	for _, m := range s.universe(c.region) {
		universe[m.key()] = true
	}
	newest := s.now().Add(-s.lag)
	ids := map[string]bool{}
	var pts []point
	for qi, qv := range queries {
		q := mapOf(qv)
		id := str(q["Id"])
		if !queryIDRE.MatchString(id) {
			s.cwError(c, http.StatusBadRequest, "InvalidParameterValueException", "InvalidParameterValue;Sender",
				"The value %s for parameter MetricDataQueries.member.%d.Id is not valid: it must start with a lower-case letter and hold only letters, digits and _", id, qi+1)
			return
		}
		if ids[id] {
			s.cwError(c, http.StatusBadRequest, "InvalidParameterValueException", "InvalidParameterValue;Sender", "The value %s for parameter MetricDataQueries.member.%d.Id is a duplicate", id, qi+1)
			return
		}
		ids[id] = true
		ms := mapOf(q["MetricStat"])
		if ms == nil {
			// Expressions (metric math) are not emulated: no data.
			continue
		}
		period, err := cbor.AsInt64(ms["Period"])
		if err != nil || !validPeriod(period) {
			s.cwError(c, http.StatusBadRequest, "InvalidParameterValueException", "InvalidParameterValue;Sender",
				"The parameter MetricDataQueries.member.%d.MetricStat.Period must be 1, 5, 10, 20, 30 or a multiple of 60", qi+1)
			return
		}
		if str(ms["Stat"]) == "" {
			s.cwError(c, http.StatusBadRequest, "MissingRequiredParameterException", "MissingParameter;Sender", "The parameter MetricDataQueries.member.%d.MetricStat.Stat is required.", qi+1)
			return
		}
		mm := mapOf(ms["Metric"])
		m := newMetric(str(mm["Namespace"]), str(mm["MetricName"]), dimsOf(mm["Dimensions"])...)
		// Exact dimension match only; a Unit other than the published one
		// (AWS/DX publishes "Boolean", "dBm" and others that are no
		// StandardUnit) matches nothing, as in CloudWatch.
		if !universe[m.key()] || (str(ms["Unit"]) != "" && m.namespace == NamespaceDX) {
			continue
		}
		if s.nodata[m.key()] {
			continue
		}
		p := time.Duration(period) * time.Second
		first := start.Truncate(p)
		if first.Before(start) {
			first = first.Add(p)
		}
		var qp []point
		for t := first; t.Before(end) && !t.After(newest); t = t.Add(p) {
			qp = append(qp, point{qi, t, s.value(m, t)})
		}
		if !ascending {
			for i, j := 0, len(qp)-1; i < j; i, j = i+1, j-1 {
				qp[i], qp[j] = qp[j], qp[i]
			}
		}
		pts = append(pts, qp...)
	}

	scope := fmt.Sprintf("GetMetricData/%s/%d/%d/%d", c.region, len(queries), start.Unix(), end.Unix())
	cur, ok := parseToken(scope, str(in["NextToken"]))
	if !ok {
		s.cwError(c, http.StatusBadRequest, "InvalidNextToken", "InvalidNextToken;Sender", "The service returned an error with Error Code InvalidNextToken")
		return
	}
	a, b, next := s.page(len(pts), cur, pageMax, maxDatapoints)
	lastOf := make([]int, len(queries)) // index past the query's last point
	for i, p := range pts {
		lastOf[p.q] = i + 1
	}
	results := []any{}
	for qi, qv := range queries {
		q := mapOf(qv)
		ts, vals := []any{}, []any{}
		for _, p := range pts[a:b] {
			if p.q == qi {
				ts = append(ts, p.ts)
				vals = append(vals, p.v)
			}
		}
		status := "Complete"
		if lastOf[qi] > b {
			status = "PartialData"
		}
		label := str(q["Label"])
		if label == "" {
			label = str(mapOf(mapOf(q["MetricStat"])["Metric"])["MetricName"])
		}
		results = append(results, cborMap{"Id": str(q["Id"]), "Label": label, "Timestamps": ts, "Values": vals, "StatusCode": status, "Messages": []any{}})
	}
	body := cborMap{"MetricDataResults": results, "Messages": []any{}}
	if next != nil {
		body["NextToken"] = pageToken(scope, *next)
	}
	writeCBOR(c.w, http.StatusOK, body)
}
