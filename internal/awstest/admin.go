package awstest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// admin serves /_awstest/…: state changes for demos and scripts, e.g.
//
//	curl -X POST 'http://127.0.0.1:4599/_awstest/bgp?vif=dxvif-fp1k7x2q&peer=dxpeer-fp14k7x2q&status=down'
//
// Endpoints: bgp (vif, peer, status), macsec (connection, up=true|false),
// connection (connection, state), vif (vif, state), fault (service, fault,
// count; fault empty clears), metric (namespace, metric, dims, value),
// lag (duration); GET requests returns the request counts.
func (s *Server) admin(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if r.URL.Path == "/_awstest/requests" {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(s.RequestCounts())
		return
	}
	if r.Method != http.MethodPost {
		http.Error(w, "use POST", http.StatusMethodNotAllowed)
		return
	}
	var err error
	switch r.URL.Path {
	case "/_awstest/bgp":
		err = s.SetBGPStatus(q.Get("vif"), q.Get("peer"), q.Get("status"))
	case "/_awstest/macsec":
		var up bool
		if up, err = strconv.ParseBool(q.Get("up")); err == nil {
			err = s.SetMACsec(q.Get("connection"), up)
		}
	case "/_awstest/connection":
		err = s.SetConnectionState(q.Get("connection"), q.Get("state"))
	case "/_awstest/vif":
		err = s.SetVIFState(q.Get("vif"), q.Get("state"))
	case "/_awstest/fault":
		n := -1
		if c := q.Get("count"); c != "" {
			n, err = strconv.Atoi(c)
		}
		if err == nil {
			s.SetFault(q.Get("service"), Fault(q.Get("fault")), n)
		}
	case "/_awstest/metric":
		var v float64
		if v, err = strconv.ParseFloat(q.Get("value"), 64); err == nil {
			s.SetMetric(q.Get("namespace"), q.Get("metric"), q.Get("dims"), v)
		}
	case "/_awstest/lag":
		var d time.Duration
		if d, err = time.ParseDuration(q.Get("duration")); err == nil {
			s.SetMetricLag(d)
		}
	default:
		err = fmt.Errorf("unknown admin endpoint %s", r.URL.Path)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
