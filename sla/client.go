// Package sla computes SLA reports (availability, latency, loss, breach
// windows, path comparison) from the probe metrics stored in Prometheus and
// renders them as Markdown, CSV, JSON or self-contained HTML.
//
// It reads only the raw metrics the agents export (no recording rules) and
// queries in bounded chunks so a month over dozens of pairs stays cheap for
// the server.
package sla

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Client speaks the Prometheus HTTP API (/api/v1/query, /api/v1/query_range,
// /api/v1/label/…/values). The http.Client carries auth and TLS settings.
type Client struct {
	base *url.URL
	hc   *http.Client
}

// NewClient checks the server URL; hc may be nil for http.DefaultClient.
func NewClient(rawURL string, hc *http.Client) (*Client, error) {
	if !strings.Contains(rawURL, "://") {
		// "prometheus:9090" parses as scheme "prometheus", "10.0.0.1:9090"
		// not at all: either way the scheme is what is missing.
		return nil, fmt.Errorf("Prometheus URL %q has no scheme: add http:// (or https://), e.g. --prometheus.url=http://%s", rawURL, rawURL)
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("parsing Prometheus URL %q: %w", rawURL, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("Prometheus URL %q must look like http://host:9090 or https://host:9090", rawURL)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	if hc == nil {
		hc = http.DefaultClient
	}
	return &Client{base: u, hc: hc}, nil
}

// URL is the server's base URL, for messages and the report header.
func (c *Client) URL() string { return c.base.String() }

// Point is one sample of a query result.
type Point struct {
	T time.Time
	V float64
}

// Series is one labelled result series.
type Series struct {
	Metric map[string]string
	Points []Point
}

// apiResponse is the envelope every Prometheus API answer comes in.
type apiResponse struct {
	Status    string          `json:"status"`
	Data      json.RawMessage `json:"data"`
	ErrorType string          `json:"errorType"`
	Error     string          `json:"error"`
	Warnings  []string        `json:"warnings"`
}

// QueryRange runs a range query, start and end inclusive.
func (c *Client) QueryRange(ctx context.Context, q string, start, end time.Time, step time.Duration) ([]Series, error) {
	form := url.Values{
		"query": {q},
		"start": {formatTime(start)},
		"end":   {formatTime(end)},
		"step":  {strconv.FormatFloat(step.Seconds(), 'f', -1, 64)},
	}
	var data struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Metric map[string]string `json:"metric"`
			Values [][2]any          `json:"values"`
		} `json:"result"`
	}
	if err := c.call(ctx, http.MethodPost, "/api/v1/query_range", form, q, &data); err != nil {
		return nil, err
	}
	if data.ResultType != "matrix" {
		return nil, fmt.Errorf("range query %q: Prometheus at %s answered with a %s, expected a matrix", q, c.base, data.ResultType)
	}
	out := make([]Series, len(data.Result))
	for i, r := range data.Result {
		out[i].Metric = r.Metric
		out[i].Points = make([]Point, 0, len(r.Values))
		for _, v := range r.Values {
			p, err := parsePoint(v)
			if err != nil {
				return nil, fmt.Errorf("range query %q: %w", q, err)
			}
			out[i].Points = append(out[i].Points, p)
		}
	}
	return out, nil
}

// Query runs an instant query that must return a vector.
func (c *Client) Query(ctx context.Context, q string, t time.Time) ([]Series, error) {
	form := url.Values{"query": {q}, "time": {formatTime(t)}}
	var data struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		} `json:"result"`
	}
	if err := c.call(ctx, http.MethodPost, "/api/v1/query", form, q, &data); err != nil {
		return nil, err
	}
	if data.ResultType != "vector" {
		return nil, fmt.Errorf("query %q: Prometheus at %s answered with a %s, expected a vector", q, c.base, data.ResultType)
	}
	out := make([]Series, len(data.Result))
	for i, r := range data.Result {
		p, err := parsePoint(r.Value)
		if err != nil {
			return nil, fmt.Errorf("query %q: %w", q, err)
		}
		out[i] = Series{Metric: r.Metric, Points: []Point{p}}
	}
	return out, nil
}

// MetricNames lists the metric names matching the selector that have
// samples between start and end.
func (c *Client) MetricNames(ctx context.Context, match string, start, end time.Time) ([]string, error) {
	form := url.Values{"match[]": {match}, "start": {formatTime(start)}, "end": {formatTime(end)}}
	var names []string
	if err := c.call(ctx, http.MethodGet, "/api/v1/label/__name__/values", form, match, &names); err != nil {
		return nil, err
	}
	return names, nil
}

// SeriesLabels lists the label sets of the series matching the selector
// that have samples between start and end (the series API reads only the
// index: cheap even over months).
func (c *Client) SeriesLabels(ctx context.Context, match string, start, end time.Time) ([]map[string]string, error) {
	form := url.Values{"match[]": {match}, "start": {formatTime(start)}, "end": {formatTime(end)}}
	var sets []map[string]string
	if err := c.call(ctx, http.MethodGet, "/api/v1/series", form, match, &sets); err != nil {
		return nil, err
	}
	return sets, nil
}

// call sends a form (POSTed where the API allows it: queries can be long)
// and decodes the data field, turning each way of failing into a message
// that says what to check.
func (c *Client) call(ctx context.Context, method, path string, form url.Values, what string, data any) error {
	u := *c.base
	u.Path += path
	var body io.Reader
	if method == http.MethodGet {
		u.RawQuery = form.Encode()
	} else {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return fmt.Errorf("building request to %s: %w", u.String(), err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return unreachable(c.base, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<30))
	if err != nil {
		return fmt.Errorf("reading answer of Prometheus at %s: %w", c.base, err)
	}
	switch resp.StatusCode {
	case http.StatusUnauthorized, http.StatusForbidden:
		return fmt.Errorf("Prometheus at %s answered %s: check the credentials (basic_auth, authorization) in --prometheus.config.file", c.base, resp.Status)
	case http.StatusNotFound:
		return fmt.Errorf("Prometheus at %s answered 404 for %s: is --prometheus.url the server's base URL (with its --web.route-prefix, if any)?", c.base, path)
	}
	var r apiResponse
	if err := json.Unmarshal(raw, &r); err != nil {
		switch resp.StatusCode {
		case http.StatusServiceUnavailable:
			// What Prometheus answers while it starts up (replaying its
			// WAL) or shuts down (X-Prometheus-Stopping says which): the
			// URL is right, the server is not ready.
			state := "starting up, shutting down or overloaded"
			switch resp.Header.Get("X-Prometheus-Stopping") {
			case "true":
				state = "shutting down"
			case "false":
				state = "starting up (not ready yet)"
			}
			return fmt.Errorf("Prometheus at %s answered %s: it is %s; try again once %s/-/ready answers 200", c.base, resp.Status, state, c.base)
		case http.StatusBadGateway, http.StatusGatewayTimeout:
			return fmt.Errorf("Prometheus at %s answered %s: a proxy in front of it could not reach it (is Prometheus running?)", c.base, resp.Status)
		}
		return fmt.Errorf("Prometheus at %s answered %s with something that is not the Prometheus API (%.80q): is --prometheus.url right?", c.base, resp.Status, raw)
	}
	if r.Status != "success" {
		return fmt.Errorf("Prometheus at %s rejected %q: %s: %s", c.base, what, r.ErrorType, r.Error)
	}
	if err := json.Unmarshal(r.Data, data); err != nil {
		return fmt.Errorf("decoding the answer of Prometheus at %s to %q: %w", c.base, what, err)
	}
	return nil
}

// unreachable explains a transport error.
func unreachable(base *url.URL, err error) error {
	// Drop url.Error's "Post <full URL with query>:" prefix: the base URL says enough.
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var ne net.Error
	hint := "is the server running and --prometheus.url right?"
	switch {
	case errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout():
		hint = "the query timed out; try a smaller --query.chunk or a longer --query.timeout"
	case strings.Contains(err.Error(), "certificate") || strings.Contains(err.Error(), "tls:"):
		hint = "check tls_config (ca_file, server_name) in --prometheus.config.file"
	case strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		hint = "the server speaks plain HTTP: use an http:// URL"
	}
	return fmt.Errorf("Prometheus at %s is unreachable: %w (%s)", base, err, hint)
}

func formatTime(t time.Time) string {
	return strconv.FormatFloat(float64(t.UnixMilli())/1000, 'f', -1, 64)
}

// parsePoint decodes [unix_seconds, "value"].
func parsePoint(v [2]any) (Point, error) {
	ts, ok := v[0].(float64)
	if !ok {
		return Point{}, fmt.Errorf("bad sample timestamp %v", v[0])
	}
	s, ok := v[1].(string)
	if !ok {
		return Point{}, fmt.Errorf("bad sample value %v", v[1])
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return Point{}, fmt.Errorf("bad sample value %q: %w", s, err)
	}
	ms := int64(math.Round(ts * 1000))
	return Point{T: time.UnixMilli(ms).UTC(), V: f}, nil
}
