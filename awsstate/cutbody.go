package awsstate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/smithy-go/logging"
	"go.uber.org/zap"
)

// CutResponseError is a failure to read an answer's body after its status
// line and headers arrived (200 OK included): the connection closed, was
// reset, or was torn down by the client's transport mid-body ("unexpected
// EOF", "use of closed network connection", "connection reset by peer").
// The SDK reports it as "deserialization failed", like a body that arrived
// whole but does not decode; this type tells the two apart.
//
// It is retryable (RetryableError): every call the pollers make is
// read-only (Describe*, List*, Get*), so repeating one is always safe. The
// aws-sdk-go-v2 maintainers leave this to each client for that reason
// (aws/aws-sdk-go-v2#1825, #1826): the SDK cannot know which operations are
// idempotent.
type CutResponseError struct{ Err error }

func (e *CutResponseError) Error() string {
	return "connection closed while reading the response body: " + e.Err.Error()
}

// Unwrap returns the transport's error.
func (e *CutResponseError) Unwrap() error { return e.Err }

// RetryableError tells the SDK's retryer (retry.RetryableError) to retry.
func (e *CutResponseError) RetryableError() bool { return true }

// cutBodyClient marks read errors of response bodies as CutResponseError.
type cutBodyClient struct{ next aws.HTTPClient }

// retryCutResponses wraps a client's HTTP client; use it only for clients
// whose every operation is read-only.
func retryCutResponses(c aws.HTTPClient) aws.HTTPClient {
	if c == nil {
		c = http.DefaultClient
	}
	return cutBodyClient{next: c}
}

func (c cutBodyClient) Do(req *http.Request) (*http.Response, error) {
	resp, err := c.next.Do(req)
	if err == nil && resp != nil && resp.Body != nil {
		resp.Body = &cutBody{ReadCloser: resp.Body}
	}
	return resp, err
}

type cutBody struct{ io.ReadCloser }

func (b *cutBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		err = &CutResponseError{Err: err}
	}
	return n, err
}

// sdkLogger sends the SDK's own log lines (e.g. "failed to discard
// remaining HTTP response body" after a cut answer) to the agent's log at
// debug level, instead of unstructured lines on standard error: what they
// report is counted in probed_aws_api_requests_total and logged once per
// kind of failure already.
type sdkLogger struct{ log *zap.Logger }

func (l sdkLogger) Logf(c logging.Classification, format string, v ...any) {
	l.log.Debug("AWS SDK: "+fmt.Sprintf(format, v...), zap.String("classification", string(c)))
}
