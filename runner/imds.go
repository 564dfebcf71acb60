package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dstackai/dstack/internal/clock"
)

// imdsClient reads EC2's instance metadata service as the AWS SDK's client
// (feature/ec2/imds) does, without linking the SDK into the runner:
//
//   - IMDSv2: a session token from PUT /latest/api/token (asked for
//     imdsTokenTTL, reused until the TTL the service answers runs out) goes
//     with every GET;
//   - a GET refused with 401 gets a new token and is tried again;
//   - when the service refuses tokens (403, 404 or 405 on the PUT) or
//     cannot be reached for one, it is read without a token (IMDSv1) until a
//     GET is refused with 401; another failure to get a token sends that
//     one GET without a token;
//   - a request is tried imdsAttempts times while it fails with 5xx, 429,
//     401 or a connection error, with a short backoff; each operation is
//     bounded by imdsOpTimeout, a connection by 250 ms, the response's
//     headers by 500 ms.
type imdsClient struct {
	endpoint string
	http     *http.Client

	mu      sync.Mutex
	token   string
	expires time.Time
	v1      bool // tokens refused: read without one until a 401
}

const (
	imdsTokenPath   = "/latest/api/token"
	imdsTokenHeader = "X-Aws-Ec2-Metadata-Token"
	imdsTTLHeader   = "X-Aws-Ec2-Metadata-Token-Ttl-Seconds"
	imdsTokenTTL    = 5 * time.Minute
	imdsAttempts    = 3
	imdsMaxBackoff  = time.Second
	imdsOpTimeout   = 5 * time.Second
	imdsMaxBody     = 1 << 20
)

func newIMDSClient(endpoint string) *imdsClient {
	dialer := &net.Dialer{Timeout: 250 * time.Millisecond, KeepAlive: 30 * time.Second}
	return &imdsClient{
		endpoint: strings.TrimRight(endpoint, "/"),
		http: &http.Client{Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           dialer.DialContext,
			ResponseHeaderTimeout: 500 * time.Millisecond,
			MaxIdleConns:          4,
			IdleConnTimeout:       90 * time.Second,
		}},
	}
}

// imdsStatusError is an answer other than 200; HTTPStatusCode says which.
type imdsStatusError struct {
	method, path string
	code         int
	body         string
}

func (e *imdsStatusError) Error() string {
	return fmt.Sprintf("%s %s: %d %s: %s", e.method, e.path, e.code, http.StatusText(e.code), e.body)
}

// HTTPStatusCode is the status the service answered.
func (e *imdsStatusError) HTTPStatusCode() int { return e.code }

// getMetadata reads meta-data/path.
func (c *imdsClient) getMetadata(ctx context.Context, path string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, imdsOpTimeout)
	defer cancel()
	path = "/latest/meta-data/" + strings.TrimLeft(path, "/")
	var err error
	for attempt := range imdsAttempts {
		if attempt > 0 {
			if serr := clock.Sleep(ctx, min(imdsMaxBackoff, 50*time.Millisecond<<attempt)); serr != nil {
				return nil, errors.Join(err, serr)
			}
		}
		var b []byte
		b, err = c.getOnce(ctx, path)
		if err == nil || !imdsRetryable(ctx, err) {
			return b, err
		}
	}
	return nil, err
}

func (c *imdsClient) getOnce(ctx context.Context, path string) ([]byte, error) {
	token, err := c.sessionToken(ctx)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.endpoint+path, nil)
	if err != nil {
		return nil, err
	}
	if token != "" {
		req.Header.Set(imdsTokenHeader, token)
	}
	b, _, err := c.do(req)
	var se *imdsStatusError
	if errors.As(err, &se) && se.code == http.StatusUnauthorized {
		// The token expired or tokens are now required: get a new one.
		c.mu.Lock()
		c.token, c.v1 = "", false
		c.mu.Unlock()
	}
	return b, err
}

// sessionToken is the token to send, "" for none (IMDSv1).
func (c *imdsClient) sessionToken(ctx context.Context) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.v1 {
		return "", nil
	}
	if c.token != "" && time.Now().Before(c.expires) {
		return c.token, nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, c.endpoint+imdsTokenPath, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set(imdsTTLHeader, strconv.Itoa(int(imdsTokenTTL/time.Second)))
	b, ttl, err := c.do(req)
	var se *imdsStatusError
	switch {
	case err == nil:
		// The token lives as long as the service says, else as asked.
		d := imdsTokenTTL
		if n, err := strconv.Atoi(ttl); err == nil && n > 0 {
			d = time.Duration(n) * time.Second
		}
		c.token, c.expires = string(b), time.Now().Add(d)
		return c.token, nil
	case ctx.Err() != nil:
		return "", err
	case errors.As(err, &se) && se.code == http.StatusBadRequest:
		return "", err
	case errors.As(err, &se) && (se.code == http.StatusForbidden || se.code == http.StatusNotFound || se.code == http.StatusMethodNotAllowed):
		c.v1 = true // the service does not do tokens
	case !errors.As(err, &se):
		c.v1 = true // unreachable for a token: try without
	}
	return "", nil
}

// do sends req and returns the body of a 200 and its token TTL header,
// else an *imdsStatusError.
func (c *imdsClient) do(req *http.Request) (body []byte, ttl string, err error) {
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, imdsMaxBody))
	if err != nil {
		return nil, "", err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, "", &imdsStatusError{method: req.Method, path: req.URL.Path, code: resp.StatusCode, body: strings.TrimSpace(string(b[:min(len(b), 200)]))}
	}
	return b, resp.Header.Get(imdsTTLHeader), nil
}

// imdsRetryable reports whether a failed request is worth another try.
func imdsRetryable(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	var se *imdsStatusError
	if errors.As(err, &se) {
		return se.code == http.StatusUnauthorized || se.code == http.StatusTooManyRequests || se.code >= 500
	}
	return true // the connection failed
}
