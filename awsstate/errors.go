package awsstate

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"

	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/middleware"
)

// Outcomes of an API request, the outcome label of the request counter.
const (
	OutcomeSuccess      = "success"
	OutcomeThrottled    = "throttled"
	OutcomeAccessDenied = "access_denied"
	OutcomeExpired      = "expired_credentials"
	OutcomeNoCreds      = "no_credentials"
	OutcomeBadRegion    = "invalid_region"
	OutcomeTimeout      = "timeout"
	OutcomeMalformed    = "malformed_response"
	OutcomeCut          = "connection_closed"
	OutcomeServerError  = "server_error"
	OutcomeClientError  = "client_error"
	OutcomeNetwork      = "network_error"
	OutcomeCanceled     = "canceled"
)

// Classify names the outcome of an API call's error.
func Classify(err error) string {
	if err == nil {
		return OutcomeSuccess
	}
	if errors.Is(err, context.Canceled) {
		return OutcomeCanceled
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return OutcomeTimeout
	}
	// Before the deserialization check: a body cut off by the connection
	// is reported as "deserialization failed" too, but nothing is wrong
	// with what AWS sent.
	var cut *CutResponseError
	if errors.As(err, &cut) {
		return OutcomeCut
	}
	msg := err.Error()
	var api smithy.APIError
	if errors.As(err, &api) {
		code := api.ErrorCode()
		switch code {
		case "Throttling", "ThrottlingException", "ThrottledException", "TooManyRequestsException",
			"RequestLimitExceeded", "RequestThrottled", "RequestThrottledException", "LimitExceededException",
			"SlowDown", "PriorRequestNotComplete", "EC2ThrottledException", "BandwidthLimitExceeded":
			return OutcomeThrottled
		case "AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "UnrecognizedClientException",
			"InvalidClientTokenId", "SignatureDoesNotMatch", "MissingAuthenticationTokenException", "AuthFailure":
			return OutcomeAccessDenied
		case "ExpiredToken", "ExpiredTokenException", "RequestExpired", "TokenRefreshRequired":
			return OutcomeExpired
		case "InvalidSignatureException":
			if strings.Contains(api.ErrorMessage(), "region") {
				return OutcomeBadRegion
			}
			return OutcomeAccessDenied
		}
		if api.ErrorFault() == smithy.FaultServer {
			return OutcomeServerError
		}
		var re interface{ HTTPStatusCode() int }
		if errors.As(err, &re) && re.HTTPStatusCode() >= 500 {
			return OutcomeServerError
		}
		if code == "UnknownError" || code == "" {
			return OutcomeMalformed
		}
		return OutcomeClientError
	}
	var de *smithy.DeserializationError
	if errors.As(err, &de) {
		return OutcomeMalformed
	}
	if strings.Contains(msg, "failed to retrieve credentials") || strings.Contains(msg, "no EC2 IMDS role found") ||
		strings.Contains(msg, "failed to refresh cached credentials") || strings.Contains(msg, "anonymous credentials") {
		if strings.Contains(msg, "ExpiredToken") {
			return OutcomeExpired
		}
		if strings.Contains(msg, "AccessDenied") {
			return OutcomeAccessDenied
		}
		return OutcomeNoCreds
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return OutcomeTimeout
	}
	var dns *net.DNSError
	if errors.As(err, &dns) {
		return OutcomeBadRegion
	}
	if errors.As(err, &ne) || strings.Contains(msg, "connection refused") || strings.Contains(msg, "EOF") {
		return OutcomeNetwork
	}
	if strings.Contains(msg, "deserialize") || strings.Contains(msg, "decode") || strings.Contains(msg, "unexpected end") {
		return OutcomeMalformed
	}
	return OutcomeClientError
}

// Hint tells the operator what to fix for an outcome.
func Hint(outcome string) string {
	switch outcome {
	case OutcomeThrottled:
		return "AWS is throttling this account's API calls; probed backs off on its own. If it persists, raise aws.interval / aws.metrics_interval or let one agent poll everything (aws.poll_all) and the others only their site"
	case OutcomeAccessDenied:
		return "the credentials lack permission: grant directconnect:Describe*, networkmonitor:List*/Get*, cloudwatch:GetMetricData and cloudwatch:ListMetrics (and sts:AssumeRole for aws.accounts)"
	case OutcomeExpired:
		return "the credentials have expired: refresh the session (aws sso login, new STS token) or use an instance/pod role that renews itself"
	case OutcomeNoCreds:
		return "no AWS credentials found: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE, attach an instance or pod role, or remove the aws: section to stop polling AWS"
	case OutcomeBadRegion:
		return "the region is unknown or unreachable: check the sites' region fields and aws.regions, or the AWS_ENDPOINT_URL* variables"
	case OutcomeTimeout:
		return "AWS did not answer in time: check the network path or proxy to the AWS endpoints, or raise aws.timeout"
	case OutcomeMalformed:
		return "AWS sent a complete response that does not decode: a proxy or VPC endpoint in the way may be altering it"
	case OutcomeCut:
		return "the connection closed while AWS's answer was being read (after its status line, often 200 OK): usually a kept-alive connection closed by the endpoint or the network at that moment. probed retries these reads (they are read-only); only if failures persist, look for something that cuts long-lived connections (NAT or firewall idle timeouts, a proxy)"
	case OutcomeServerError:
		return "AWS reported an internal error; probed retries on its own"
	case OutcomeNetwork:
		return "cannot reach the AWS endpoint: check DNS, proxy (HTTPS_PROXY) and firewall, or AWS_ENDPOINT_URL*"
	}
	return "the request was rejected; see the error for the parameter AWS names"
}

// requestCounter counts requests by service, operation and outcome.
type requestCounter struct {
	mu sync.Mutex
	m  map[[3]string]uint64
}

func newRequestCounter() *requestCounter { return &requestCounter{m: map[[3]string]uint64{}} }

func (c *requestCounter) add(service, op, outcome string) {
	c.mu.Lock()
	c.m[[3]string{service, op, outcome}]++
	c.mu.Unlock()
}

func (c *requestCounter) snapshot() []RequestCount {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]RequestCount, 0, len(c.m))
	for k, v := range c.m {
		out = append(out, RequestCount{Service: k[0], Operation: k[1], Outcome: k[2], Count: v})
	}
	return out
}

// countAttempts returns an API option that counts every attempt (retries
// included) after the retry middleware, so throttles that a retry hid are
// still counted.
func (c *requestCounter) countAttempts(service string) func(*middleware.Stack) error {
	return func(stack *middleware.Stack) error {
		m := middleware.FinalizeMiddlewareFunc("probedCountAttempts", func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
			out, md, err := next.HandleFinalize(ctx, in)
			c.add(service, awsmiddleware.GetOperationName(ctx), Classify(err))
			return out, md, err
		})
		if err := stack.Finalize.Insert(m, "Retry", middleware.After); err != nil {
			return stack.Finalize.Add(m, middleware.After)
		}
		return nil
	}
}
