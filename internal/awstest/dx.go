package awstest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
)

// dxPageMax is the cap AWS applies to maxResults on Direct Connect lists.
const dxPageMax = 100

type dxRequest struct {
	ConnectionID       string   `json:"connectionId"`
	VirtualInterfaceID string   `json:"virtualInterfaceId"`
	GatewayID          string   `json:"directConnectGatewayId"`
	MaxResults         int      `json:"maxResults"`
	NextToken          string   `json:"nextToken"`
	ResourceARNs       []string `json:"resourceArns"`
}

type dxAttachment struct {
	GatewayID    string `json:"directConnectGatewayId"`
	VIFID        string `json:"virtualInterfaceId"`
	VIFRegion    string `json:"virtualInterfaceRegion"`
	VIFOwner     string `json:"virtualInterfaceOwnerAccount"`
	State        string `json:"attachmentState"`
	Type         string `json:"attachmentType"`
	StateChError string `json:"stateChangeError,omitempty"`
}

func (s *Server) dxOK(c *call, v any) {
	writeJSON(c.w, http.StatusOK, "application/x-amz-json-1.1", v)
}

func (s *Server) dxClientError(c *call, format string, args ...any) {
	s.fail(c, http.StatusBadRequest, "DirectConnectClientException", fmt.Sprintf(format, args...), "")
}

func (s *Server) directConnect(c *call) {
	if ct := c.r.Header.Get("Content-Type"); ct != "application/x-amz-json-1.1" || c.r.Method != http.MethodPost || c.r.URL.Path != "/" {
		s.fail(c, http.StatusBadRequest, "SerializationException", fmt.Sprintf("expected POST / with application/x-amz-json-1.1, got %s %s %s", c.r.Method, c.r.URL.Path, ct), "")
		return
	}
	var req dxRequest
	if len(c.body) > 0 {
		if err := json.Unmarshal(c.body, &req); err != nil {
			s.fail(c, http.StatusBadRequest, "SerializationException", "request body is not valid JSON: "+err.Error(), "")
			return
		}
	}
	if req.MaxResults < 0 || req.MaxResults > 1000 {
		s.dxClientError(c, "maxResults must be between 1 and 100")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	scope := fmt.Sprintf("%s/%s/%s/%s/%s", c.op, c.region, req.ConnectionID, req.VirtualInterfaceID, req.GatewayID)
	cur, ok := parseToken(scope, req.NextToken)
	if !ok {
		s.dxClientError(c, "The nextToken is invalid for this request.")
		return
	}
	switch c.op {
	case "DescribeConnections":
		var list []Connection
		for _, cn := range s.fx.Connections {
			if cn.Region == c.region && (req.ConnectionID == "" || req.ConnectionID == cn.ID) {
				list = append(list, cn)
			}
		}
		if req.ConnectionID != "" && len(list) == 0 {
			s.dxClientError(c, "Connection %s not found in %s", req.ConnectionID, c.region)
			return
		}
		a, b, next := s.page(len(list), cur, req.MaxResults, dxPageMax)
		s.dxOK(c, withToken(map[string]any{"connections": nonNil(list[a:b])}, scope, next))
	case "DescribeVirtualInterfaces":
		var list []VIF
		for _, v := range s.fx.VIFs {
			if v.Region == c.region && (req.ConnectionID == "" || req.ConnectionID == v.ConnectionID) &&
				(req.VirtualInterfaceID == "" || req.VirtualInterfaceID == v.ID) {
				list = append(list, v)
			}
		}
		if req.VirtualInterfaceID != "" && len(list) == 0 {
			s.dxClientError(c, "Virtual interface %s not found in %s", req.VirtualInterfaceID, c.region)
			return
		}
		a, b, next := s.page(len(list), cur, req.MaxResults, dxPageMax)
		s.dxOK(c, withToken(map[string]any{"virtualInterfaces": nonNil(list[a:b])}, scope, next))
	case "DescribeDirectConnectGateways":
		// Gateways are global: every region answers with all of them.
		var list []Gateway
		for _, g := range s.fx.Gateways {
			if req.GatewayID == "" || req.GatewayID == g.ID {
				list = append(list, g)
			}
		}
		a, b, next := s.page(len(list), cur, req.MaxResults, dxPageMax)
		s.dxOK(c, withToken(map[string]any{"directConnectGateways": nonNil(list[a:b])}, scope, next))
	case "DescribeDirectConnectGatewayAttachments":
		if req.GatewayID == "" && req.VirtualInterfaceID == "" {
			s.dxClientError(c, "Either directConnectGatewayId or virtualInterfaceId must be specified")
			return
		}
		var list []dxAttachment
		for _, v := range s.fx.VIFs {
			if v.GatewayID == "" || v.State == "deleted" || v.State == "deleting" {
				continue
			}
			if (req.GatewayID == "" || req.GatewayID == v.GatewayID) && (req.VirtualInterfaceID == "" || req.VirtualInterfaceID == v.ID) {
				t := "PrivateVirtualInterface"
				if v.Type == "transit" {
					t = "TransitVirtualInterface"
				}
				list = append(list, dxAttachment{GatewayID: v.GatewayID, VIFID: v.ID, VIFRegion: v.Region, VIFOwner: v.OwnerAccount, State: "attached", Type: t})
			}
		}
		a, b, next := s.page(len(list), cur, req.MaxResults, dxPageMax)
		s.dxOK(c, withToken(map[string]any{"directConnectGatewayAttachments": nonNil(list[a:b])}, scope, next))
	case "DescribeTags":
		if len(req.ResourceARNs) == 0 || len(req.ResourceARNs) > 20 {
			s.dxClientError(c, "resourceArns must list 1 to 20 ARNs")
			return
		}
		var out []map[string]any
		for _, arn := range req.ResourceARNs {
			id := arn[strings.LastIndex(arn, "/")+1:]
			var tags []Tag
			if cn := s.conn(id); cn != nil {
				tags = cn.Tags
			} else if v := s.vif(id); v != nil {
				tags = v.Tags
			} else {
				s.dxClientError(c, "Resource %s not found", arn)
				return
			}
			out = append(out, map[string]any{"resourceArn": arn, "tags": nonNil(tags)})
		}
		s.dxOK(c, map[string]any{"resourceTags": out})
	default:
		s.fail(c, http.StatusBadRequest, "UnknownOperationException", "Unknown operation "+c.op, "")
	}
}

func withToken(m map[string]any, scope string, next *cursor) map[string]any {
	if next != nil {
		m["nextToken"] = pageToken(scope, *next)
	}
	return m
}

// nonNil makes empty lists encode as [] rather than null, as AWS does.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
