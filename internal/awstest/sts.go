package awstest

import (
	"encoding/xml"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"
)

// STS is the service name of AWS Security Token Service (AssumeRole, for
// polling several accounts).
const STS = "sts"

var roleARNRE = regexp.MustCompile(`^arn:aws[a-z-]*:iam::(\d{12}):role/(.+)$`)

// AssumedKey is the access key ID the server hands out for a role, so
// tests can see which requests ran under it (AccessKeys).
func AssumedKey(roleARN string) string {
	m := roleARNRE.FindStringSubmatch(roleARN)
	if m == nil {
		return ""
	}
	return "ASIA" + m[1]
}

type stsCredentials struct {
	AccessKeyID     string `xml:"AccessKeyId"`
	SecretAccessKey string `xml:"SecretAccessKey"`
	SessionToken    string `xml:"SessionToken"`
	Expiration      string `xml:"Expiration"`
}

type assumeRoleResponse struct {
	XMLName xml.Name `xml:"https://sts.amazonaws.com/doc/2011-06-15/ AssumeRoleResponse"`
	Result  struct {
		Credentials stsCredentials `xml:"Credentials"`
		User        struct {
			ID  string `xml:"AssumedRoleId"`
			ARN string `xml:"Arn"`
		} `xml:"AssumedRoleUser"`
	} `xml:"AssumeRoleResult"`
	RequestID string `xml:"ResponseMetadata>RequestId"`
}

type stsError struct {
	XMLName xml.Name `xml:"https://sts.amazonaws.com/doc/2011-06-15/ ErrorResponse"`
	Error   struct {
		Type    string `xml:"Type"`
		Code    string `xml:"Code"`
		Message string `xml:"Message"`
	} `xml:"Error"`
	RequestID string `xml:"RequestId"`
}

func writeXML(w http.ResponseWriter, status int, v any) {
	data, err := xml.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/xml")
	w.WriteHeader(status)
	w.Write([]byte(xml.Header))
	w.Write(data)
}

// sts serves AssumeRole over awsQuery (form-encoded request, XML answer).
func (s *Server) sts(c *call) {
	form, err := url.ParseQuery(string(c.body))
	if err != nil || form.Get("Version") != "2011-06-15" {
		s.stsFail(c, http.StatusBadRequest, "InvalidAction", "expected an awsQuery form body with Version=2011-06-15")
		return
	}
	if form.Get("Action") != "AssumeRole" {
		s.stsFail(c, http.StatusBadRequest, "InvalidAction", fmt.Sprintf("Could not find operation %s for version 2011-06-15", form.Get("Action")))
		return
	}
	arn, session := form.Get("RoleArn"), form.Get("RoleSessionName")
	m := roleARNRE.FindStringSubmatch(arn)
	if m == nil || session == "" {
		s.stsFail(c, http.StatusBadRequest, "ValidationError", "RoleArn must be an IAM role ARN and RoleSessionName is required")
		return
	}
	s.mu.Lock()
	denied := s.deniedRoles[arn]
	s.mu.Unlock()
	if denied {
		s.stsFail(c, http.StatusForbidden, "AccessDenied", fmt.Sprintf("User: arn:aws:iam::%s:user/probed is not authorized to perform: sts:AssumeRole on resource: %s", s.fx.Account, arn))
		return
	}
	var out assumeRoleResponse
	out.Result.Credentials = stsCredentials{AccessKeyID: AssumedKey(arn), SecretAccessKey: "assumed-secret",
		SessionToken: "session-" + session, Expiration: s.now().Add(time.Hour).UTC().Format(time.RFC3339)}
	out.Result.User.ID = "AROA" + m[1] + ":" + session
	out.Result.User.ARN = fmt.Sprintf("arn:aws:sts::%s:assumed-role/%s/%s", m[1], strings.TrimPrefix(m[2], "/"), session)
	out.RequestID = c.w.Header().Get("X-Amzn-Requestid")
	writeXML(c.w, http.StatusOK, out)
}

func (s *Server) stsFail(c *call, status int, code, msg string) {
	var e stsError
	e.Error.Type, e.Error.Code, e.Error.Message = "Sender", code, msg
	e.RequestID = c.w.Header().Get("X-Amzn-Requestid")
	writeXML(c.w, status, e)
}

// DenyRole makes AssumeRole of roleARN fail with AccessDenied.
func (s *Server) DenyRole(roleARN string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deniedRoles[roleARN] = true
}

// AccessKeys returns, per service, the access key IDs requests were signed with.
func (s *Server) AccessKeys(service string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for k := range s.keys[service] {
		out = append(out, k)
	}
	return out
}
