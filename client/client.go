// Package client is the Go client of dstack's HTTP API. The CLI, the runner and
// the tests reach the server through it and nothing else.
//
// It also holds the one retry policy of those callers (retry.go): Retryable
// says which failures are worth repeating (the server unreachable, 429, 500,
// 502, 503, 504, 507; Retry-After honoured), Backoff spaces the tries, and
// Do repeats a call under both. The CLI and the runner agree through it.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/dstackai/dstack/api"
)

// Client calls a dstack server with one bearer token. It may know the
// server by several addresses (replicas reached without a load balancer):
// it calls one at a time, and moves to the next when that one cannot be
// reached (see servers).
type Client struct {
	srv   *servers
	token string
	http  *http.Client
}

// servers are the addresses of one server, and the one in use. Copies of a
// Client (WithToken) share them, so that all calls move together.
type servers struct {
	urls []*url.URL
	cur  atomic.Int64
}

// current is the address in use.
func (s *servers) current() (int64, *url.URL) {
	i := s.cur.Load()
	return i, s.urls[int(i)%len(s.urls)]
}

// failed moves off the address at i after a call to it could not reach the
// server, unless another call moved already.
func (s *servers) failed(i int64) {
	if len(s.urls) > 1 {
		s.cur.CompareAndSwap(i, (i+1)%int64(len(s.urls)))
	}
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient replaces the HTTP client (for TLS settings or tests).
func WithHTTPClient(h *http.Client) Option { return func(c *Client) { c.http = h } }

// New returns a client of the server at baseURL (e.g.
// "http://127.0.0.1:3000"). baseURL may list several addresses of one
// server, comma-separated ("http://10.0.0.1:3000,http://10.0.0.2:3000"):
// the replicas of a server that share a database, reached without a load
// balancer. The client then uses one at a time; when it cannot reach the
// server there, it moves to the next, and tries the request there at once
// when no byte of it can have reached the server (the connection was
// refused), else on the caller's retry.
func New(baseURL, token string, opts ...Option) (*Client, error) {
	srv := &servers{}
	for _, raw := range strings.Split(baseURL, ",") {
		u, err := ParseServerURL(raw)
		if err != nil {
			return nil, err
		}
		srv.urls = append(srv.urls, u)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64
	tr.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	c := &Client{srv: srv, token: token, http: &http.Client{Transport: tr}}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// ParseServerURL reads one address of a server: an absolute http or https
// URL such as http://127.0.0.1:3000.
func ParseServerURL(raw string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimRight(strings.TrimSpace(raw), "/"))
	if err != nil || u.Scheme == "" || u.Host == "" {
		return nil, fmt.Errorf("server URL %q is not an absolute http(s) URL such as http://127.0.0.1:3000", raw)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("server URL %q: scheme must be http or https", raw)
	}
	return u, nil
}

// BaseURL is the server's URL: the address in use, when there are several.
func (c *Client) BaseURL() string {
	_, u := c.srv.current()
	return u.String()
}

// WithToken returns a copy of c that authenticates with another token.
func (c *Client) WithToken(token string) *Client {
	cp := *c
	cp.token = token
	return &cp
}

// request describes one call.
type request struct {
	method  string
	path    string // escaped; under api.PathPrefix unless it starts with "//"
	query   url.Values
	body    io.Reader
	ctype   string
	headers map[string]string
}

func (c *Client) do(ctx context.Context, r request) (*http.Response, error) {
	// Where a body that can be sent again starts.
	var start int64
	if s, ok := r.body.(io.Seeker); ok && len(c.srv.urls) > 1 {
		start, _ = s.Seek(0, io.SeekCurrent)
	}
	for tries := 1; ; tries++ {
		i, base := c.srv.current()
		resp, retry, err := c.doAt(ctx, base, r)
		var ue *UnreachableError
		if !errors.As(err, &ue) {
			return resp, err
		}
		c.srv.failed(i)
		if !retry || tries >= len(c.srv.urls) {
			return nil, err
		}
		if s, ok := r.body.(io.Seeker); ok {
			if _, serr := s.Seek(start, io.SeekStart); serr != nil {
				return nil, err
			}
		}
	}
}

// doAt makes the request r to the server at base. When the server could not
// be reached, retry says whether the request may go to another address at
// once: the connection was refused, so nothing of it was sent, and its
// body, if any, can be sent again.
func (c *Client) doAt(ctx context.Context, base *url.URL, r request) (resp *http.Response, retry bool, err error) {
	u := *base
	p := api.PathPrefix + r.path
	if strings.HasPrefix(r.path, "//") {
		p = r.path[1:]
	}
	// r.path is escaped already (a segment may hold an escaped "/" or "%"):
	// keep it as it is on the wire.
	raw := u.EscapedPath() + p
	unescaped, err := url.PathUnescape(raw)
	if err != nil {
		return nil, false, fmt.Errorf("request path %q: %w", raw, err)
	}
	u.Path, u.RawPath = unescaped, raw
	u.RawQuery = r.query.Encode()
	req, err := http.NewRequestWithContext(ctx, r.method, u.String(), r.body)
	if err != nil {
		return nil, false, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if r.ctype != "" {
		req.Header.Set("Content-Type", r.ctype)
	}
	for k, v := range r.headers {
		req.Header.Set(k, v)
	}
	resp, err = c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, false, ctx.Err()
		}
		_, seekable := r.body.(io.Seeker)
		return nil, refused(err) && (r.body == nil || seekable), &UnreachableError{URL: base.String(), Err: err}
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		return nil, false, decodeError(resp)
	}
	return resp, false, nil
}

// refused reports whether err is a connection the server's address refused
// (or could not be made at all): no byte of the request was sent.
func refused(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// UnreachableError says the server could not be reached at all.
type UnreachableError struct {
	URL string
	Err error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("cannot reach the dstack server at %s: %v (is `dstack server` running and the URL right?)", e.URL, e.Err)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

func decodeError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var body api.ErrorBody
	after := parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	if json.Unmarshal(b, &body) == nil && body.Error != nil && body.Error.Message != "" {
		body.Error.Status = resp.StatusCode
		body.Error.RetryAfter = after
		return body.Error
	}
	msg := strings.TrimSpace(string(b))
	if msg == "" {
		msg = resp.Status
	}
	return &api.Error{Status: resp.StatusCode, Code: api.CodeInternal, Message: fmt.Sprintf("server answered %s: %s", resp.Status, msg), RetryAfter: after}
}

// IsCode reports whether err is an API error with the given code.
func IsCode(err error, code string) bool {
	var e *api.Error
	return errors.As(err, &e) && e.Code == code
}

func (c *Client) doJSON(ctx context.Context, method, path string, query url.Values, in, out any) error {
	r := request{method: method, path: path, query: query}
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		r.body, r.ctype = bytes.NewReader(b), "application/json"
	}
	resp, err := c.do(ctx, r)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil || resp.StatusCode == http.StatusNoContent {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode %s %s: %w", method, path, err)
	}
	return nil
}

// Health calls GET /healthz.
func (c *Client) Health(ctx context.Context) error {
	resp, err := c.do(ctx, request{method: http.MethodGet, path: "//healthz"})
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// Me returns the user the token belongs to.
func (c *Client) Me(ctx context.Context) (*api.User, error) {
	var u api.User
	return &u, c.doJSON(ctx, http.MethodGet, "/me", nil, nil, &u)
}

// ServerInfo asks the server for its version and limits (GET /version,
// no token needed).
func (c *Client) ServerInfo(ctx context.Context) (*api.ServerInfo, error) {
	var info api.ServerInfo
	return &info, c.doJSON(ctx, http.MethodGet, "/version", nil, nil, &info)
}

// CodeUpload uploads a gzip'd tar of a working directory.
func (c *Client) CodeUpload(ctx context.Context, archive io.Reader) (*api.CodeUploadResponse, error) {
	resp, err := c.do(ctx, request{method: http.MethodPost, path: "/code", body: archive, ctype: "application/gzip"})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out api.CodeUploadResponse
	return &out, json.NewDecoder(resp.Body).Decode(&out)
}

// RunSubmit submits a run.
func (c *Client) RunSubmit(ctx context.Context, req api.RunSubmitRequest) (*api.Run, error) {
	var r api.Run
	return &r, c.doJSON(ctx, http.MethodPost, "/runs", nil, req, &r)
}

// RunList lists runs, newest first: unfinished and recently finished ones, or
// all of them; it reads every page.
func (c *Client) RunList(ctx context.Context, all bool) ([]api.Run, error) {
	var out []api.Run
	o := RunListOptions{All: all}
	for {
		page, next, err := c.RunListPage(ctx, o)
		if err != nil {
			return nil, err
		}
		out = append(out, page...)
		if next == "" {
			return out, nil
		}
		o.After = next
	}
}

// RunListOptions select a page of runs.
type RunListOptions struct {
	All   bool   // finished runs of any age too, not only unfinished and recent ones
	Limit int    // at most this many runs; 0 is the server's page size (1000, its most)
	After string // continue after the page whose next cursor this is
}

// RunListPage lists one page of runs, newest first, and returns the cursor
// of the next page: "" when no more runs follow.
func (c *Client) RunListPage(ctx context.Context, o RunListOptions) ([]api.Run, string, error) {
	q := url.Values{}
	if o.All {
		q.Set("all", "true")
	}
	if o.Limit > 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	if o.After != "" {
		q.Set("after", o.After)
	}
	return getPage[api.Run](ctx, c, "/runs", q)
}

// getPage reads one page of a paged list (GET path?q) and the cursor of the
// next page: "" when no more follow.
func getPage[T any](ctx context.Context, c *Client, path string, q url.Values) ([]T, string, error) {
	resp, err := c.do(ctx, request{method: http.MethodGet, path: path, query: q})
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	var page []T
	if err := json.NewDecoder(resp.Body).Decode(&page); err != nil {
		return nil, "", fmt.Errorf("decode GET %s: %w", path, err)
	}
	return page, resp.Header.Get(api.NextCursorHeader), nil
}

// RunGet returns a run with its jobs.
func (c *Client) RunGet(ctx context.Context, name string) (*api.Run, error) {
	var r api.Run
	return &r, c.doJSON(ctx, http.MethodGet, "/runs/"+url.PathEscape(name), nil, nil, &r)
}

// RunStop stops a run: artifacts are uploaded unless abort.
func (c *Client) RunStop(ctx context.Context, name string, abort bool) (*api.Run, error) {
	var r api.Run
	return &r, c.doJSON(ctx, http.MethodPost, "/runs/"+url.PathEscape(name)+"/stop", nil, api.StopRequest{Abort: abort}, &r)
}

// RunDelete deletes a finished run with its logs, artifacts and code; force
// deletes a tagged run and its tags.
func (c *Client) RunDelete(ctx context.Context, name string, force bool) (*api.RunDeleteResponse, error) {
	var q url.Values
	if force {
		q = url.Values{"force": {"true"}}
	}
	var r api.RunDeleteResponse
	return &r, c.doJSON(ctx, http.MethodDelete, "/runs/"+url.PathEscape(name), q, nil, &r)
}

// LogOptions select what JobLogs returns.
type LogOptions struct {
	Follow bool      // keep the stream open until the job finishes
	Since  time.Time // only output written at or after it
	Offset int64     // skip the first Offset bytes of the log
}

// JobLogs streams a job's output.
func (c *Client) JobLogs(ctx context.Context, jobID string, o LogOptions) (io.ReadCloser, error) {
	q := url.Values{}
	if o.Follow {
		q.Set("follow", "true")
	}
	if !o.Since.IsZero() {
		q.Set("since", o.Since.UTC().Format(time.RFC3339Nano))
	}
	if o.Offset > 0 {
		q.Set("offset", strconv.FormatInt(o.Offset, 10))
	}
	resp, err := c.do(ctx, request{method: http.MethodGet, path: "/jobs/" + url.PathEscape(jobID) + "/logs", query: q})
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// ArtifactList lists the artifact files of a run's jobs.
func (c *Client) ArtifactList(ctx context.Context, run string) ([]api.ArtifactFile, error) {
	var fs []api.ArtifactFile
	return fs, c.doJSON(ctx, http.MethodGet, "/runs/"+url.PathEscape(run)+"/artifacts", nil, nil, &fs)
}

// ArtifactDownload opens one artifact file from offset on, and says how many
// bytes follow.
func (c *Client) ArtifactDownload(ctx context.Context, jobID, path string, offset int64) (io.ReadCloser, int64, error) {
	r := request{method: http.MethodGet, path: "/jobs/" + url.PathEscape(jobID) + "/artifacts/" + escapePath(path)}
	if offset > 0 {
		r.headers = map[string]string{"Range": fmt.Sprintf("bytes=%d-", offset)}
	}
	resp, err := c.do(ctx, r)
	if err != nil {
		return nil, 0, err
	}
	return resp.Body, resp.ContentLength, nil
}

// ArtifactRequest selects what ArtifactGet reads of an artifact file.
type ArtifactRequest struct {
	// Offset asks for the file from this byte on (a resumed download).
	Offset int64
	// IfRange, with an Offset, is the entity tag of the file the caller
	// holds the start of: the server sends the rest only when its file has
	// that tag, and the whole file otherwise.
	IfRange string
}

// Artifact is an artifact file being read.
type Artifact struct {
	Body io.ReadCloser
	// Offset is where Body starts in the file: the asked offset, or 0 when
	// the server sent the whole file.
	Offset int64
	Length int64  // bytes in Body
	ETag   string // the file's entity tag; empty for a file without a hash
}

// ArtifactGet opens one artifact file as req asks.
func (c *Client) ArtifactGet(ctx context.Context, jobID, path string, req ArtifactRequest) (*Artifact, error) {
	r := request{method: http.MethodGet, path: "/jobs/" + url.PathEscape(jobID) + "/artifacts/" + escapePath(path)}
	if req.Offset > 0 {
		r.headers = map[string]string{"Range": fmt.Sprintf("bytes=%d-", req.Offset)}
		if req.IfRange != "" {
			r.headers["If-Range"] = req.IfRange
		}
	}
	resp, err := c.do(ctx, r) //nolint:bodyclose // the Artifact's Body, closed by the caller
	if err != nil {
		return nil, err
	}
	a := &Artifact{Body: resp.Body, Length: resp.ContentLength, ETag: resp.Header.Get("ETag")}
	if resp.StatusCode == http.StatusPartialContent {
		a.Offset = req.Offset
	}
	return a, nil
}

// RunnerList lists the user's runners.
func (c *Client) RunnerList(ctx context.Context) ([]api.Runner, error) {
	var rs []api.Runner
	return rs, c.doJSON(ctx, http.MethodGet, "/runners", nil, nil, &rs)
}

// RunnerRemove removes the offline runners whose ID or name is ref.
func (c *Client) RunnerRemove(ctx context.Context, ref string) (*api.RunnerRemoveResponse, error) {
	var out api.RunnerRemoveResponse
	return &out, c.doJSON(ctx, http.MethodDelete, "/runners/"+url.PathEscape(ref), nil, nil, &out)
}

func escapePath(p string) string {
	parts := strings.Split(p, "/")
	for i, s := range parts {
		parts[i] = url.PathEscape(s)
	}
	return strings.Join(parts, "/")
}
