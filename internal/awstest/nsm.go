package awstest

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

const nsmPageMax = 100

// created is when the fixture's NSM resources claim to have been made.
var created = time.Date(2026, 1, 15, 10, 0, 0, 0, time.UTC)

// nsmOperation names the restJson1 operation a method and path address.
func nsmOperation(r *http.Request) string {
	p := strings.Split(strings.Trim(r.URL.EscapedPath(), "/"), "/")
	switch {
	case r.Method == http.MethodGet && len(p) == 1 && p[0] == "monitors":
		return "ListMonitors"
	case r.Method == http.MethodGet && len(p) == 2 && p[0] == "monitors":
		return "GetMonitor"
	case r.Method == http.MethodGet && len(p) == 4 && p[0] == "monitors" && p[2] == "probes":
		return "GetProbe"
	case r.Method == http.MethodGet && len(p) == 2 && p[0] == "tags":
		return "ListTagsForResource"
	}
	return "Unknown"
}

func (s *Server) monitorARN(m *Monitor) string {
	return fmt.Sprintf("arn:aws:networkmonitor:%s:%s:monitor/%s", m.Region, s.fx.Account, m.Name)
}

func (s *Server) probeJSON(m *Monitor, p *Probe) map[string]any {
	out := map[string]any{
		"probeId":       p.ID,
		"probeArn":      fmt.Sprintf("arn:aws:networkmonitor:%s:%s:probe/%s", m.Region, s.fx.Account, p.ID),
		"sourceArn":     p.SourceARN,
		"destination":   p.Destination,
		"protocol":      p.Protocol,
		"packetSize":    p.PacketSize,
		"addressFamily": p.AddressFamily,
		"vpcId":         p.VPCID,
		"state":         p.State,
		"createdAt":     created.Unix(),
		"modifiedAt":    created.Unix(),
		"tags":          nonNilMap(p.Tags),
	}
	if p.DestinationPort != 0 {
		out["destinationPort"] = p.DestinationPort
	}
	return out
}

func (s *Server) nsmError(c *call, status int, typ, format string, args ...any) {
	s.fail(c, status, typ, fmt.Sprintf(format, args...), "")
}

func (s *Server) networkMonitor(c *call) {
	p := strings.Split(strings.Trim(c.r.URL.EscapedPath(), "/"), "/")
	s.mu.Lock()
	defer s.mu.Unlock()
	find := func(name string) *Monitor {
		for i := range s.fx.Monitors {
			if m := &s.fx.Monitors[i]; m.Name == name && m.Region == c.region {
				return m
			}
		}
		return nil
	}
	ok := func(v any) { writeJSON(c.w, http.StatusOK, "application/json", v) }
	switch c.op {
	case "ListMonitors":
		q := c.r.URL.Query()
		limit := 0
		if v := q.Get("maxResults"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				s.nsmError(c, http.StatusBadRequest, "ValidationException", "maxResults must be a positive integer")
				return
			}
			limit = n
		}
		state := q.Get("state")
		scope := "ListMonitors/" + c.region + "/" + state
		cur, valid := parseToken(scope, q.Get("nextToken"))
		if !valid {
			s.nsmError(c, http.StatusBadRequest, "ValidationException", "Invalid pagination token")
			return
		}
		var list []map[string]any
		for i := range s.fx.Monitors {
			m := &s.fx.Monitors[i]
			if m.Region != c.region || (state != "" && m.State != state) {
				continue
			}
			list = append(list, map[string]any{"monitorArn": s.monitorARN(m), "monitorName": m.Name, "state": m.State,
				"aggregationPeriod": m.AggregationPeriod, "tags": nonNilMap(m.Tags)})
		}
		a, b, next := s.page(len(list), cur, limit, nsmPageMax)
		ok(withToken(map[string]any{"monitors": nonNil(list[a:b])}, scope, next))
	case "GetMonitor":
		name, _ := url.PathUnescape(p[1])
		m := find(name)
		if m == nil {
			s.nsmError(c, http.StatusNotFound, "ResourceNotFoundException", "Monitor %s not found", name)
			return
		}
		probes := []map[string]any{}
		for i := range m.Probes {
			probes = append(probes, s.probeJSON(m, &m.Probes[i]))
		}
		ok(map[string]any{"monitorArn": s.monitorARN(m), "monitorName": m.Name, "state": m.State,
			"aggregationPeriod": m.AggregationPeriod, "tags": nonNilMap(m.Tags),
			"createdAt": created.Unix(), "modifiedAt": created.Unix(), "probes": probes})
	case "GetProbe":
		name, _ := url.PathUnescape(p[1])
		id, _ := url.PathUnescape(p[3])
		m := find(name)
		if m == nil {
			s.nsmError(c, http.StatusNotFound, "ResourceNotFoundException", "Monitor %s not found", name)
			return
		}
		for i := range m.Probes {
			if m.Probes[i].ID == id {
				ok(s.probeJSON(m, &m.Probes[i]))
				return
			}
		}
		s.nsmError(c, http.StatusNotFound, "ResourceNotFoundException", "Probe %s not found", id)
	case "ListTagsForResource":
		arn, _ := url.PathUnescape(p[1])
		for i := range s.fx.Monitors {
			m := &s.fx.Monitors[i]
			if s.monitorARN(m) == arn {
				ok(map[string]any{"tags": nonNilMap(m.Tags)})
				return
			}
		}
		s.nsmError(c, http.StatusNotFound, "ResourceNotFoundException", "Resource %s not found", arn)
	default:
		s.nsmError(c, http.StatusNotFound, "UnknownOperationException", "no operation at %s %s", c.r.Method, c.r.URL.Path)
	}
}

func nonNilMap(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}
