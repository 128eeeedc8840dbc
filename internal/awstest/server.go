package awstest

import (
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

//go:embed testdata/sitelink-7.json
var siteLink7 []byte

// SiteLink7 returns the built-in fixture: the seven sites of
// configs/example-mesh.yaml, each with a MACsec connection, prod and dev
// SiteLink VIFs on one DX gateway (BGP over IPv4 and IPv6), and an NSM
// monitor with an ICMP and a TCP probe.
func SiteLink7() *Fixture {
	var fx Fixture
	if err := json.Unmarshal(siteLink7, &fx); err != nil {
		panic(fmt.Sprintf("awstest: built-in fixture: %v", err))
	}
	return &fx
}

// Services as named in fault injection and request counts.
const (
	DirectConnect = "directconnect"
	NSM           = "networkmonitor"
	CloudWatch    = "monitoring"
)

// Fault is an error the server returns instead of an answer.
type Fault string

// Faults a test can inject; each is encoded the way its service really
// sends it.
const (
	FaultThrottle     Fault = "throttle"
	FaultAccessDenied Fault = "access-denied"
	FaultExpired      Fault = "expired-token"
	FaultMalformed    Fault = "malformed"
	FaultServerError  Fault = "server-error"
	FaultSlow         Fault = "slow" // hangs until the client gives up
	// FaultCutBody answers 200 OK with a Content-Length, sends part of the
	// body and closes the connection: the client's read of the body fails
	// (unexpected EOF), as when a connection is torn down mid-response.
	FaultCutBody Fault = "cut-body"
)

// knownRegions are the regions the server accepts; AWS has no endpoint for
// others, so the emulator answers as AWS does to a request signed for one.
var knownRegions = map[string]bool{}

func init() {
	for _, r := range strings.Fields(`us-east-1 us-east-2 us-west-1 us-west-2 ca-central-1 ca-west-1 sa-east-1 mx-central-1
		eu-central-1 eu-central-2 eu-west-1 eu-west-2 eu-west-3 eu-north-1 eu-south-1 eu-south-2
		ap-northeast-1 ap-northeast-2 ap-northeast-3 ap-southeast-1 ap-southeast-2 ap-southeast-3 ap-southeast-4
		ap-southeast-5 ap-southeast-7 ap-south-1 ap-south-2 ap-east-1 me-south-1 me-central-1 il-central-1 af-south-1`) {
		knownRegions[r] = true
	}
}

// Server is the emulator. Its methods are safe for concurrent use.
type Server struct {
	mu    sync.Mutex
	fx    *Fixture
	now   func() time.Time
	pages bool

	faults   map[string]*faultState
	requests map[string]int // "service/Operation" → count
	regions  map[string]int // "service/Operation/region" → count
	lag      time.Duration  // newest CloudWatch datapoint is this old
	metrics  map[string]float64
	nodata   map[string]bool

	deniedRoles map[string]bool
	keys        map[string]map[string]bool // service → access key IDs seen

	reqSeq atomic.Uint64

	srv *http.Server
	ln  net.Listener
}

type faultState struct {
	fault Fault
	left  int // <0: forever
}

// Option changes a Server.
type Option func(*Server)

// WithClock makes the server generate CloudWatch data relative to now.
func WithClock(now func() time.Time) Option { return func(s *Server) { s.now = now } }

// WithoutForcedPagination returns whole lists on one page unless the client
// asks for fewer (maxResults).
func WithoutForcedPagination() Option { return func(s *Server) { s.pages = false } }

// New builds a server over a copy of fx (nil: the built-in SiteLink7).
func New(fx *Fixture, opts ...Option) *Server {
	if fx == nil {
		fx = SiteLink7()
	}
	s := &Server{
		fx: fx.clone(), now: time.Now, pages: true,
		faults: map[string]*faultState{}, requests: map[string]int{}, regions: map[string]int{},
		lag: 2 * time.Minute, metrics: map[string]float64{}, nodata: map[string]bool{},
		deniedRoles: map[string]bool{}, keys: map[string]map[string]bool{},
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Start serves on addr (e.g. "127.0.0.1:0") and returns the base URL to
// put in AWS_ENDPOINT_URL.
func (s *Server) Start(addr string) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("awstest: listening on %s: %w", addr, err)
	}
	s.ln = ln
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = s.srv.Serve(ln) }() // ends with ErrServerClosed at Close
	return "http://" + ln.Addr().String(), nil
}

// Close stops the server and drops open connections.
func (s *Server) Close() error {
	if s.srv == nil {
		return nil
	}
	return s.srv.Close()
}

// SetFault makes the next count requests to service fail with f (count < 0:
// until cleared with an empty fault). service may name one operation,
// "service/Operation" (e.g. "monitoring/GetMetricData"); such a fault wins
// over the service's.
func (s *Server) SetFault(service string, f Fault, count int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f == "" || count == 0 {
		delete(s.faults, service)
		return
	}
	s.faults[service] = &faultState{fault: f, left: count}
}

// ClearFaults removes every injected fault.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = map[string]*faultState{}
}

// Requests returns how many requests reached service/op (all regions).
func (s *Server) Requests(service, op string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests[service+"/"+op]
}

// RequestsIn returns how many requests reached service/op in region.
func (s *Server) RequestsIn(service, op, region string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.regions[service+"/"+op+"/"+region]
}

// RequestCounts returns a copy of all counts keyed "service/Operation/region".
func (s *Server) RequestCounts() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := make(map[string]int, len(s.regions))
	for k, v := range s.regions {
		m[k] = v
	}
	return m
}

// SetBGPStatus sets a BGP peer's bgpStatus (up, down, unknown).
func (s *Server) SetBGPStatus(vifID, peerID, status string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.vif(vifID)
	if v == nil {
		return fmt.Errorf("awstest: no virtual interface %s", vifID)
	}
	for i := range v.BGPPeers {
		if v.BGPPeers[i].ID == peerID {
			v.BGPPeers[i].Status = status
			// AWS reports a VIF whose BGP sessions are all down as "down".
			allDown := true
			for _, p := range v.BGPPeers {
				if p.Status == "up" {
					allDown = false
				}
			}
			if allDown && v.State == "available" {
				v.State = "down"
			} else if !allDown && v.State == "down" {
				v.State = "available"
			}
			return nil
		}
	}
	return fmt.Errorf("awstest: virtual interface %s has no BGP peer %s", vifID, peerID)
}

// SetMACsec sets a connection's portEncryptionStatus: up=true gives
// "Encryption Up", false "Encryption Down" (and the key state follows).
func (s *Server) SetMACsec(connectionID string, up bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.conn(connectionID)
	if c == nil {
		return fmt.Errorf("awstest: no connection %s", connectionID)
	}
	if up {
		c.PortEncryptionStatus = "Encryption Up"
	} else {
		c.PortEncryptionStatus = "Encryption Down"
	}
	return nil
}

// SetConnectionState sets connectionState (available, down, ...).
func (s *Server) SetConnectionState(connectionID, state string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.conn(connectionID)
	if c == nil {
		return fmt.Errorf("awstest: no connection %s", connectionID)
	}
	c.State = state
	return nil
}

// SetVIFState sets virtualInterfaceState.
func (s *Server) SetVIFState(vifID, state string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.vif(vifID)
	if v == nil {
		return fmt.Errorf("awstest: no virtual interface %s", vifID)
	}
	v.State = state
	return nil
}

// AddVIF adds (or replaces) a virtual interface, e.g. a new site.
func (s *Server) AddVIF(v VIF) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.fx.VIFs {
		if s.fx.VIFs[i].ID == v.ID {
			s.fx.VIFs[i] = v
			return
		}
	}
	s.fx.VIFs = append(s.fx.VIFs, v)
}

// SetMetric pins a CloudWatch metric to value for every datapoint. dims is
// the dimension set as "Name=Value" pairs joined by ",", sorted by name,
// e.g. "ConnectionId=dxcon-fh1k7x2q".
func (s *Server) SetMetric(namespace, metric, dims string, value float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.metrics[namespace+"|"+metric+"|"+dims] = value
}

// SetNoData makes a metric return no datapoints (as for a probe created in
// the last hours, which has no HealthIndicator yet).
func (s *Server) SetNoData(namespace, metric, dims string, nodata bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if nodata {
		s.nodata[namespace+"|"+metric+"|"+dims] = true
	} else {
		delete(s.nodata, namespace+"|"+metric+"|"+dims)
	}
}

// SetMetricLag sets how old the newest CloudWatch datapoint is (default 2m;
// CloudWatch publishes DX data with about that delay). A lag longer than a
// client's look-back window means it gets no data at all.
func (s *Server) SetMetricLag(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lag = d
}

func (s *Server) conn(id string) *Connection {
	for i := range s.fx.Connections {
		if s.fx.Connections[i].ID == id {
			return &s.fx.Connections[i]
		}
	}
	return nil
}

func (s *Server) vif(id string) *VIF {
	for i := range s.fx.VIFs {
		if s.fx.VIFs[i].ID == id {
			return &s.fx.VIFs[i]
		}
	}
	return nil
}

// sigv4Scope extracts region and service from
// "AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/directconnect/aws4_request, ...".
var sigv4Scope = regexp.MustCompile(`Credential=([^/,\s]*)/(\d{8})/([^/,]*)/([^/,]+)/aws4_request`)

type call struct {
	service, op, region, account string
	w                            http.ResponseWriter
	r                            *http.Request
	body                         []byte
}

// ServeHTTP dispatches on the protocol: X-Amz-Target (Direct Connect),
// /service/…/operation/… (CloudWatch) or method and path (NSM).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/_awstest/") {
		s.admin(w, r)
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, "reading body", http.StatusBadRequest)
		return
	}
	c := &call{w: w, r: r, body: body}
	target := r.Header.Get("X-Amz-Target")
	switch {
	case strings.HasPrefix(target, "OvertureService."):
		c.service, c.op = DirectConnect, strings.TrimPrefix(target, "OvertureService.")
	case strings.HasPrefix(r.URL.Path, "/service/GraniteServiceVersion20100801/operation/"):
		c.service, c.op = CloudWatch, strings.TrimPrefix(r.URL.Path, "/service/GraniteServiceVersion20100801/operation/")
	case r.Method == http.MethodPost && strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded"):
		c.service, c.op = STS, "AssumeRole"
	default:
		c.service, c.op = NSM, nsmOperation(r)
	}
	w.Header().Set("X-Amzn-Requestid", s.requestID())

	m := sigv4Scope.FindStringSubmatch(r.Header.Get("Authorization"))
	if m == nil {
		s.fail(c, http.StatusForbidden, "MissingAuthenticationTokenException", "Missing Authentication Token", "")
		return
	}
	c.region = m[3]
	if m[4] != c.service {
		s.fail(c, http.StatusForbidden, "InvalidSignatureException",
			fmt.Sprintf("Credential should be scoped to correct service: '%s'.", c.service), "")
		return
	}
	if c.region == "" || !knownRegions[c.region] {
		s.fail(c, http.StatusForbidden, "InvalidSignatureException",
			fmt.Sprintf("Credential should be scoped to a valid region, not '%s'.", c.region), "")
		return
	}
	c.account = s.fx.Account

	s.mu.Lock()
	if s.keys[c.service] == nil {
		s.keys[c.service] = map[string]bool{}
	}
	s.keys[c.service][m[1]] = true
	s.requests[c.service+"/"+c.op]++
	s.regions[c.service+"/"+c.op+"/"+c.region]++
	var fault Fault
	for _, key := range []string{c.service + "/" + c.op, c.service} {
		f := s.faults[key]
		if f == nil {
			continue
		}
		fault = f.fault
		if f.left > 0 {
			f.left--
			if f.left == 0 {
				delete(s.faults, key)
			}
		}
		break
	}
	s.mu.Unlock()
	if fault != "" {
		s.injectFault(c, fault)
		return
	}
	switch c.service {
	case DirectConnect:
		s.directConnect(c)
	case CloudWatch:
		s.cloudWatch(c)
	case STS:
		s.sts(c)
	default:
		s.networkMonitor(c)
	}
}

func (s *Server) injectFault(c *call, f Fault) {
	switch f {
	case FaultThrottle:
		switch c.service {
		case DirectConnect:
			s.fail(c, http.StatusBadRequest, "com.amazon.coral.availability#ThrottlingException", "Rate exceeded", "")
		case NSM:
			s.fail(c, http.StatusTooManyRequests, "ThrottlingException", "Rate exceeded", "")
		default:
			s.fail(c, http.StatusBadRequest, "com.amazon.coral.availability#ThrottlingException", "Rate exceeded", "Throttling;Sender")
		}
	case FaultAccessDenied:
		msg := fmt.Sprintf("User: arn:aws:iam::%s:user/probed is not authorized to perform: %s:%s", s.fx.Account, c.service, c.op)
		if c.service == CloudWatch {
			s.fail(c, http.StatusForbidden, "AccessDeniedException", msg, "AccessDenied;Sender")
		} else {
			s.fail(c, http.StatusForbidden, "AccessDeniedException", msg, "")
		}
	case FaultExpired:
		s.fail(c, http.StatusForbidden, "ExpiredTokenException", "The security token included in the request is expired", "ExpiredToken;Sender")
	case FaultServerError:
		switch c.service {
		case DirectConnect:
			s.fail(c, http.StatusInternalServerError, "DirectConnectServerException", "An internal error occurred", "")
		case NSM:
			s.fail(c, http.StatusInternalServerError, "InternalServerException", "An internal error occurred", "")
		default:
			s.fail(c, http.StatusInternalServerError, "InternalServiceFault", "An internal error occurred", "InternalServiceError;Receiver")
		}
	case FaultMalformed:
		// A truncated body with a success status: what a broken proxy
		// or a cut connection leaves behind.
		if c.service == CloudWatch {
			c.w.Header().Set("Smithy-Protocol", "rpc-v2-cbor")
			c.w.Header().Set("Content-Type", "application/cbor")
			c.w.WriteHeader(http.StatusOK)
			c.w.Write([]byte{0xbf, 0x71, 'M', 'e', 't'})
			return
		}
		c.w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		c.w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(c.w, `{"connections": [{"connectionId": "dxcon-`)
	case FaultCutBody:
		ctype, part := "application/x-amz-json-1.1", []byte(`{"connections": [{"connectionId": "dxcon-`)
		switch c.service {
		case CloudWatch:
			c.w.Header().Set("Smithy-Protocol", "rpc-v2-cbor")
			ctype, part = "application/cbor", []byte{0xbf, 0x71, 'M', 'e', 't'}
		case NSM:
			ctype, part = "application/json", []byte(`{"monitors": [{"monitorName": "sitelink-`)
		}
		c.w.Header().Set("Content-Type", ctype)
		c.w.Header().Set("Content-Length", "4096")
		c.w.WriteHeader(http.StatusOK)
		c.w.Write(part)
		_ = http.NewResponseController(c.w).Flush()
		// The server closes the connection without finishing the body.
		panic(http.ErrAbortHandler)
	case FaultSlow:
		select {
		case <-c.r.Context().Done():
		case <-time.After(5 * time.Minute):
		}
	}
}

// fail writes an error the way the call's protocol encodes it.
func (s *Server) fail(c *call, status int, errType, msg, queryError string) {
	switch c.service {
	case STS:
		s.stsFail(c, status, strings.TrimPrefix(errType, "com.amazon.coral.availability#"), msg)
	case CloudWatch:
		if queryError != "" {
			c.w.Header().Set("X-Amzn-Query-Error", queryError)
		}
		writeCBOR(c.w, status, cborMap{"__type": "com.amazonaws.cloudwatch#" + strings.TrimPrefix(errType, "com.amazon.coral.availability#"), "message": msg})
	case NSM:
		c.w.Header().Set("X-Amzn-ErrorType", errType)
		writeJSON(c.w, status, "application/json", map[string]any{"message": msg})
	default:
		writeJSON(c.w, status, "application/x-amz-json-1.1", map[string]any{"__type": errType, "message": msg})
	}
}

func writeJSON(w http.ResponseWriter, status int, ctype string, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", ctype)
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	w.WriteHeader(status)
	w.Write(data)
}

func (s *Server) requestID() string {
	return fmt.Sprintf("a1b2c3d4-0000-4000-8000-%012x", s.reqSeq.Add(1))
}

// Page tokens bind the operation, the region and the request's filters, so
// a token replayed with other parameters is rejected as AWS does.
type cursor struct{ offset, page int }

func pageToken(scope string, c cursor) string {
	return base64.RawURLEncoding.EncodeToString([]byte(fmt.Sprintf("%s\x00%d\x00%d", scope, c.offset, c.page)))
}

func parseToken(scope, tok string) (cursor, bool) {
	if tok == "" {
		return cursor{}, true
	}
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return cursor{}, false
	}
	parts := strings.Split(string(raw), "\x00")
	if len(parts) != 3 || parts[0] != scope {
		return cursor{}, false
	}
	off, err1 := strconv.Atoi(parts[1])
	pg, err2 := strconv.Atoi(parts[2])
	if err1 != nil || err2 != nil || off < 0 || pg < 1 {
		return cursor{}, false
	}
	return cursor{off, pg}, true
}

// page cuts n items into pages. With forced pagination every list takes at
// least two pages (a list of one or none gets an empty second page, which
// AWS also sends). limit is the client's maxResults (0: none), capped at max.
// next is nil on the last page.
func (s *Server) page(n int, c cursor, limit, max int) (start, end int, next *cursor) {
	size := max
	if limit > 0 && limit < size {
		size = limit
	}
	if s.pages {
		if half := (n + 1) / 2; half >= 1 && half < size {
			size = half
		}
	}
	start = min(c.offset, n)
	end = min(start+size, n)
	if end < n || (s.pages && c.page == 0 && n <= 1) {
		next = &cursor{end, c.page + 1}
	}
	return start, end, next
}
