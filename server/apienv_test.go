package server_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/client"
	"github.com/dstackai/dstack/internal/testutil"
	"github.com/dstackai/dstack/server"
	"github.com/dstackai/dstack/server/servertest"
	"github.com/dstackai/dstack/store"
)

// apiEnv is a started server, its admin and the code archive they run.
type apiEnv struct {
	srv    *servertest.Server
	admin  *client.Client
	codeID string
}

// setup starts a server for one test.
func setup(t testing.TB, opts ...servertest.Option) *apiEnv {
	t.Helper()
	srv := servertest.Start(t, opts...)
	admin := srv.Client()
	return &apiEnv{srv: srv, admin: admin, codeID: uploadCode(t, admin)}
}

func withClock(c *testutil.Clock) servertest.Option {
	return servertest.WithConfig(func(cfg *server.Config) { cfg.Now = c.Now })
}

var bigRunner = api.HostResources{CPUs: 8, MemoryMiB: 16 << 10, DiskMiB: 100 << 10}

// registerRunner registers a runner with c's user token and returns a client
// holding the runner's credential.
func registerRunner(t *testing.T, c *client.Client, name string) *client.Client {
	t.Helper()
	return c.WithToken(registerRunnerToken(t, c, name))
}

// registerRunnerToken registers a runner and returns its credential.
func registerRunnerToken(t testing.TB, c *client.Client, name string) string {
	t.Helper()
	reg, err := c.RunnerRegister(context.Background(), api.RunnerRegisterRequest{
		Name: name, Hostname: name + ".example", Executor: "shell", Version: "test", Resources: bigRunner,
	})
	if err != nil {
		t.Fatalf("register runner %s: %v", name, err)
	}
	return reg.Token
}

// newUser adds a user straight to the store (the API has no user management
// yet) and returns a client with its token.
func newUser(t *testing.T, srv *servertest.Server, name string) *client.Client {
	t.Helper()
	token := "dstu_" + randomHex(t)
	sum := sha256.Sum256([]byte(token))
	_, err := srv.Store().UserCreate(context.Background(), store.UserCreateParams{
		ID: randomHex(t)[:16], Name: name, TokenHash: hex.EncodeToString(sum[:]), Now: time.Now(),
	})
	if err != nil {
		t.Fatalf("create user %s: %v", name, err)
	}
	return srv.Client().WithToken(token)
}

func randomHex(t *testing.T) string {
	t.Helper()
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}

// bashJob is a minimal valid job.
func bashJob(workflow string, deps ...string) api.JobSpec {
	return api.JobSpec{Workflow: workflow, Provider: "bash", Commands: []string{"echo " + workflow}, DependsOn: deps}
}

// submit submits a run of jobs whose last job is the run's workflow.
func (e *apiEnv) submit(t *testing.T, c *client.Client, jobs ...api.JobSpec) *api.Run {
	t.Helper()
	codeID := e.codeID
	if c != e.admin {
		codeID = uploadCode(t, c) // code archives are their uploader's
	}
	run, err := c.RunSubmit(context.Background(), api.RunSubmitRequest{Workflow: jobs[len(jobs)-1].Workflow, CodeID: codeID, Jobs: jobs})
	if err != nil {
		t.Fatalf("submit run: %v", err)
	}
	return run
}

// claim takes the next job for rc, failing the test when none comes.
func claim(t *testing.T, rc *client.Client) *api.Assignment {
	t.Helper()
	a, err := rc.RunnerClaim(context.Background(), api.ClaimRequest{Free: bigRunner, Wait: api.Duration(10 * time.Second)})
	if err != nil {
		t.Fatalf("claim: %v", err)
	}
	if a == nil {
		t.Fatal("claim: no job was assigned within 10s")
	}
	return a
}

// setStatus reports a job's state as its runner.
func setStatus(t *testing.T, rc *client.Client, a *api.Assignment, st api.JobStatus) {
	t.Helper()
	zero := 0
	u := api.JobStatusUpdate{Status: st}
	if st.Finished() {
		u.ExitCode = &zero
	}
	if _, err := rc.JobSetStatus(context.Background(), a.Job.ID, a.Lease, u); err != nil {
		t.Fatalf("set status %s: %v", st, err)
	}
}

// jobLog reads a job's whole log as its user.
func jobLog(t *testing.T, c *client.Client, jobID string) string {
	t.Helper()
	rc, err := c.JobLogs(context.Background(), jobID, client.LogOptions{})
	if err != nil {
		t.Fatalf("read logs: %v", err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read logs: %v", err)
	}
	return string(b)
}

// getJob returns the job with id of the run name, as its user sees it.
func getJob(t *testing.T, c *client.Client, run, id string) api.Job {
	t.Helper()
	r, err := c.RunGet(context.Background(), run)
	if err != nil {
		t.Fatalf("get run %s: %v", run, err)
	}
	for _, j := range r.Jobs {
		if j.ID == id {
			return j
		}
	}
	t.Fatalf("run %s has no job %s", run, id)
	return api.Job{}
}

// reply is a raw HTTP answer.
type reply struct {
	status int
	header http.Header
	body   []byte
}

// req describes a raw HTTP request.
type req struct {
	method, path string // path is absolute on the server, query included
	token        string
	auth         string // the whole Authorization header, instead of token
	body         string
	header       map[string]string
	chunked      bool // send the body without a Content-Length
}

// noRedirect is an HTTP client that shows redirects instead of following them.
var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// do sends r to the server raw, so that tests see exactly what a client of
// the HTTP API sees.
func do(t *testing.T, base string, r req) reply {
	t.Helper()
	var body io.Reader = strings.NewReader(r.body)
	if r.chunked {
		body = io.MultiReader(strings.NewReader(r.body)) // a length the client cannot know
	}
	hr, err := http.NewRequest(r.method, base+r.path, body)
	if err != nil {
		t.Fatalf("%s %s: %v", r.method, r.path, err)
	}
	if r.chunked {
		hr.ContentLength = -1
	}
	switch {
	case r.auth != "":
		hr.Header.Set("Authorization", r.auth)
	case r.token != "":
		hr.Header.Set("Authorization", "Bearer "+r.token)
	}
	for k, v := range r.header {
		hr.Header.Set(k, v)
	}
	resp, err := noRedirect.Do(hr)
	if err != nil {
		t.Fatalf("%s %s: %v", r.method, r.path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", r.method, r.path, err)
	}
	return reply{status: resp.StatusCode, header: resp.Header, body: b}
}

// wantError checks that rp is an API error: the status, a JSON body
// {"error": {"code", "message"}} with the code, and a message holding each
// of parts. It returns the message.
func wantError(t *testing.T, what string, rp reply, status int, code string, parts ...string) string {
	t.Helper()
	if rp.status != status {
		t.Errorf("%s: status %d, want %d (body %s)", what, rp.status, status, rp.body)
		return ""
	}
	if ct := rp.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("%s: Content-Type %q, want application/json", what, ct)
	}
	var eb struct {
		Error *struct {
			Code    *string `json:"code"`
			Message *string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(rp.body, &eb); err != nil || eb.Error == nil || eb.Error.Code == nil || eb.Error.Message == nil {
		t.Errorf("%s: body %s is not {\"error\": {\"code\", \"message\"}}", what, rp.body)
		return ""
	}
	if *eb.Error.Code != code {
		t.Errorf("%s: code %q, want %q (message %q)", what, *eb.Error.Code, code, *eb.Error.Message)
	}
	for _, p := range parts {
		if !strings.Contains(*eb.Error.Message, p) {
			t.Errorf("%s: message %q does not say %q", what, *eb.Error.Message, p)
		}
	}
	return *eb.Error.Message
}

// wantAPIError checks an error returned by the client package.
func wantAPIError(t *testing.T, what string, err error, status int, code string) {
	t.Helper()
	var ae *api.Error
	switch {
	case err == nil:
		t.Errorf("%s succeeded, want %d %s", what, status, code)
	case !errors.As(err, &ae):
		t.Errorf("%s: %v, want an API error %d %s", what, err, status, code)
	case ae.Status != status || ae.Code != code:
		t.Errorf("%s: %d %s (%s), want %d %s", what, ae.Status, ae.Code, ae.Message, status, code)
	}
}

var wildcard = regexp.MustCompile(`\{([A-Za-z_][A-Za-z0-9_]*)(\.\.\.)?\}`)

// fill puts values into a route's path wildcards.
func fill(t *testing.T, path string, values map[string]string) string {
	t.Helper()
	return wildcard.ReplaceAllStringFunc(path, func(w string) string {
		name := wildcard.FindStringSubmatch(w)[1]
		v, ok := values[name]
		if !ok {
			t.Fatalf("route %s: no test value for {%s}: add one to the test's table", path, name)
		}
		return v
	})
}

// bytesOf reads r whole and closes it.
func bytesOf(t *testing.T, r io.ReadCloser) []byte {
	t.Helper()
	defer r.Close()
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, r); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
