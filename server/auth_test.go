package server_test

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/internal/testutil"
	"github.com/dstackai/dstack/server"
	"github.com/dstackai/dstack/server/servertest"
)

// publicRoutes answer without a bearer token, each for the reason given. A
// route added without asUser or asRunner fails
// TestEveryRouteRefusesMissingAndWrongTokens until it is listed here, with a
// test of its own for whatever credential it checks instead.
var publicRoutes = map[string]string{
	"GET /healthz":          "readiness checks of load balancers and scripts",
	"GET /api/openapi.yaml": "the API's description",
	// The version and the code size limit hold no secret; `dstack version`
	// asks before any token is set (TestVersionIsReported).
	"GET /api/v1/version": "the server's version and limits",
	// Prometheus scrapes without credentials on a trusted network; the
	// metrics hold counts, never names, tokens or output.
	"GET /metrics": "Prometheus scraping",
	// An on-demand instance's runner has no token yet: the single-use join
	// token in the body is its credential (TestRunnerJoin).
	"POST /api/v1/runners/join": "on-demand instances' runners join with a join token",
	// The installer runs on a machine that has no token yet; the script and
	// the binary hold no secret (TestRunnerInstaller*, TestRunnerDownload*).
	"GET /runner": "the runner installer script",
	"GET /runner/download/{os}/{arch}/dstack-runner":        "the runner binary the installer downloads",
	"GET /runner/download/{os}/{arch}/dstack-runner.sha256": "the checksum the installer checks the binary against",
	// Signing in takes the token in the body; signing out only clears the
	// cookie, and asks a valid session for its CSRF token
	// (TestSessionCookie*, TestSessionCSRF*, TestSignOut).
	"POST /api/v1/session":   "signing in with a token in the body",
	"DELETE /api/v1/session": "signing out: clears the session cookie",
	// The web UI's pages are shells that show nothing without a session
	// cookie: they redirect to /login (TestUIPagesRedirectToLogin); what
	// they show comes from the API. The static files hold no data.
	"GET /{$}":         "the web UI: redirects to /runs or /login",
	"GET /login":       "the web UI's login page",
	"GET /runs":        "a page of the web UI, for a session only",
	"GET /runs/{name}": "a page of the web UI, for a session only",
	"GET /runners":     "a page of the web UI, for a session only",
	"GET /settings":    "a page of the web UI, for a session only",
	"GET /users":       "a page of the web UI, for an admin's session only",
	"GET /audit":       "a page of the web UI, for an admin's session only",
	"GET /usage":       "a page of the web UI, for a session only",
	// The charts are drawn for a session's user, with what the usage API
	// would show them; without a session they redirect to /login
	// (TestUIPagesRedirectToLogin).
	"GET /usage/charts/instances.svg": "a chart of the web UI, for a session only",
	"GET /usage/charts/daily.svg":     "a chart of the web UI, for a session only",
	"GET /runs/{name}/timeline.svg":   "a chart of the web UI, for a session that may see the run",
	"GET /ui/static/{path...}":        "the web UI's stylesheet and scripts",
}

// routeRequest is a plausible request to a route of the server, made with
// real objects so that only the credential can be the reason for a refusal,
// and one that would change something if it were let through.
func routeRequest(t *testing.T, r server.Route, run *api.Run, codeID string) req {
	t.Helper()
	job := run.Jobs[0]
	path := fill(t, r.Path, map[string]string{"name": run.Name, "id": job.ID, "dep": job.ID, "path": "model/weights.bin", "os": "linux", "arch": "amd64", "ref": "r1", "sha256": "abababababababababababababababababababababababababababababababab"})
	bodies := map[string]string{
		"POST /api/v1/code":                                "not really a tarball",
		"POST /api/v1/runs":                                fmt.Sprintf(`{"workflow":"w","code_id":%q,"jobs":[{"workflow":"w","provider":"bash","commands":["true"]}]}`, codeID),
		"POST /api/v1/runs/{name}/stop":                    `{"abort":true}`,
		"POST /api/v1/runners/register":                    `{"name":"intruder","resources":{"cpus":4,"memory_mib":4096}}`,
		"POST /api/v1/runner/heartbeat":                    `{}`,
		"POST /api/v1/runner/interruption":                 `{"action":"terminate","time":"2030-01-01T00:00:00Z"}`,
		"POST /api/v1/runner/claim":                        `{"free":{"cpus":64,"memory_mib":65536}}`,
		"POST /api/v1/runner/jobs/{id}/status":             `{"status":"done"}`,
		"POST /api/v1/runner/jobs/{id}/logs":               "intruder output\n",
		"PUT /api/v1/runner/jobs/{id}/artifacts/{path...}": "intruder artifact",
		"PUT /api/v1/aws":                                  `{"access_key_id":"AKIAINTRUDER","secret_access_key":"intruder","region":"eu-west-1"}`,
	}
	if r.String() == "POST /api/v1/runner/jobs/{id}/logs" {
		path += "?offset=0"
	}
	return req{method: r.Method, path: path, body: bodies[r.String()], header: map[string]string{api.LeaseHeader: "1"}}
}

func TestEveryRouteRefusesMissingAndWrongTokens(t *testing.T) {
	t.Parallel()
	e := setup(t)
	run := e.submit(t, e.admin, bashJob("train"))
	routes := server.Routes(t)
	if len(routes) < 10 {
		t.Fatalf("found only %d routes in the server's source: the route reader is broken", len(routes))
	}
	for _, r := range routes {
		if r.Auth == "" {
			if _, ok := publicRoutes[r.String()]; !ok {
				t.Errorf("route %s takes no credential: wrap its handler in asUser or asRunner, or add it to publicRoutes if it is meant to be public", r)
			}
			continue
		}
		hint := "dstack config" // how a user fixes a refused token
		prefix := "dstu_"
		if r.Auth == "runnerToken" {
			hint, prefix = "register", "dstr_"
		}
		for _, tc := range []struct {
			name  string
			auth  string // Authorization header
			parts []string
		}{
			{"no token", "", []string{"Authorization: Bearer"}},
			{"empty bearer", "Bearer ", []string{"Authorization: Bearer"}},
			{"another scheme", "Basic YWRtaW46YWRtaW4=", []string{"Authorization: Bearer"}},
			{"unknown token", "Bearer " + prefix + randomHex(t), []string{hint}},
			{"garbage token", "Bearer not-a-token", []string{hint}},
		} {
			rq := routeRequest(t, r, run, e.codeID)
			rq.auth = tc.auth
			wantError(t, fmt.Sprintf("%s with %s", r, tc.name), do(t, e.srv.URL, rq), http.StatusUnauthorized, api.CodeUnauthenticated, tc.parts...)
		}
	}

	// The refused requests changed nothing.
	ctx := context.Background()
	runs, err := e.admin.RunList(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != 1 || runs[0].Name != run.Name || runs[0].Status != api.StatusPending {
		t.Errorf("after refused requests, runs = %+v; want only %s, still pending", runs, run.Name)
	}
	if rs, err := e.admin.RunnerList(ctx); err != nil || len(rs) != 0 {
		t.Errorf("after refused requests, runners = %+v, %v; want none", rs, err)
	}
	if got := jobLog(t, e.admin, run.Jobs[0].ID); got != "" {
		t.Errorf("after refused requests, the job's log = %q, want empty", got)
	}
	if fs, err := e.admin.ArtifactList(ctx, run.Name); err != nil || len(fs) != 0 {
		t.Errorf("after refused requests, artifacts = %+v, %v; want none", fs, err)
	}
}

func TestPublicRoutesAnswerWithoutToken(t *testing.T) {
	t.Parallel()
	e := setup(t)
	served := map[string]bool{}
	for _, r := range server.Routes(t) {
		served[r.String()] = true
	}
	want := map[string]string{
		"GET /healthz":          `"status":"ok"`,
		"GET /metrics":          "dstack_jobs",
		"GET /api/openapi.yaml": "openapi:",
		"GET /runner":           "#!/bin/sh",
	}
	for route := range publicRoutes {
		if !served[route] {
			t.Errorf("public route %s is not served any more: drop it from publicRoutes", route)
			continue
		}
		if _, ok := want[route]; !ok {
			continue // a public route that takes another credential has its own test
		}
		method, path, _ := strings.Cut(route, " ")
		rp := do(t, e.srv.URL, req{method: method, path: path})
		if rp.status != http.StatusOK {
			t.Errorf("%s without a token: status %d, want 200", route, rp.status)
		}
		if !strings.Contains(string(rp.body), want[route]) {
			t.Errorf("%s: body does not hold %q", route, want[route])
		}
	}
}

func TestUnknownEndpointSaysWhereTheAPIIsDescribed(t *testing.T) {
	t.Parallel()
	e := setup(t)
	rp := do(t, e.srv.URL, req{method: http.MethodGet, path: "/api/v1/nothing", token: e.srv.AdminToken})
	wantError(t, "GET /api/v1/nothing", rp, http.StatusNotFound, api.CodeNotFound, "/api/openapi.yaml")
}

func TestCredentialsDoNotCrossBetweenUsersAndRunners(t *testing.T) {
	t.Parallel()
	e := setup(t)
	run := e.submit(t, e.admin, bashJob("train"))
	runnerToken := registerRunnerToken(t, e.admin, "r1")
	for _, r := range server.Routes(t) {
		rq := routeRequest(t, r, run, e.codeID)
		switch r.Auth {
		case "userToken":
			rq.token = runnerToken
			wantError(t, r.String()+" with a runner credential", do(t, e.srv.URL, rq), http.StatusForbidden, api.CodeForbidden, "user token")
		case "runnerToken":
			rq.token = e.srv.AdminToken
			wantError(t, r.String()+" with a user token", do(t, e.srv.URL, rq), http.StatusForbidden, api.CodeForbidden, "runner", "register")
		}
	}
	// The job is still waiting, untouched.
	if j := getJob(t, e.admin, run.Name, run.Jobs[0].ID); j.Status != api.StatusPending || j.RunnerID != "" {
		t.Errorf("after refused requests, job = %s on %q; want pending on no runner", j.Status, j.RunnerID)
	}
}

func TestBearerSchemeIsCaseInsensitive(t *testing.T) {
	t.Parallel()
	e := setup(t)
	for _, scheme := range []string{"Bearer", "bearer", "BEARER"} {
		rp := do(t, e.srv.URL, req{method: http.MethodGet, path: "/api/v1/me", auth: scheme + " " + e.srv.AdminToken})
		if rp.status != http.StatusOK || !strings.Contains(string(rp.body), `"name":"admin"`) {
			t.Errorf("GET /me with %q scheme: %d %s, want 200 as admin", scheme, rp.status, rp.body)
		}
	}
}

func TestExpiredRunnerCredentialIsRefused(t *testing.T) {
	t.Parallel()
	clock := testutil.NewClock(time.Now())
	e := setup(t, withClock(clock), servertest.WithConfig(func(c *server.Config) { c.RunnerTokenTTL = time.Hour }))
	ctx := context.Background()
	reg, err := e.admin.RunnerRegister(ctx, api.RunnerRegisterRequest{Name: "r1", Resources: bigRunner})
	if err != nil {
		t.Fatal(err)
	}
	if want := clock.Now().Add(time.Hour); reg.ExpiresAt.Sub(want).Abs() > time.Millisecond {
		t.Errorf("credential expires at %s, want %s (RunnerTokenTTL after registration)", reg.ExpiresAt, want)
	}
	rc := e.admin.WithToken(reg.Token)
	if err := rc.RunnerHeartbeat(ctx, api.HeartbeatRequest{}); err != nil {
		t.Fatalf("heartbeat with a fresh credential: %v", err)
	}
	clock.Advance(time.Hour - time.Second)
	if err := rc.RunnerHeartbeat(ctx, api.HeartbeatRequest{}); err != nil {
		t.Fatalf("heartbeat a second before expiry: %v", err)
	}
	clock.Advance(time.Second)
	for _, rq := range []req{
		{method: http.MethodPost, path: "/api/v1/runner/heartbeat", body: `{}`},
		{method: http.MethodPost, path: "/api/v1/runner/claim", body: `{"free":{"cpus":8,"memory_mib":8192}}`},
	} {
		rq.token = reg.Token
		wantError(t, rq.path+" with an expired credential", do(t, e.srv.URL, rq), http.StatusUnauthorized, api.CodeUnauthenticated, "expired", "register again")
	}
	// Registering again gives a credential that works.
	rc2 := registerRunner(t, e.admin, "r1")
	if err := rc2.RunnerHeartbeat(ctx, api.HeartbeatRequest{}); err != nil {
		t.Errorf("heartbeat with a new credential: %v", err)
	}
}

func TestTokensAreNotStoredInPlainText(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	const runnerName = "plaintext-check-runner"
	reg, err := e.admin.RunnerRegister(ctx, api.RunnerRegisterRequest{Name: runnerName, Resources: bigRunner})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.admin.WithToken(reg.Token).RunnerHeartbeat(ctx, api.HeartbeatRequest{}); err != nil {
		t.Fatal(err)
	}
	if err := e.srv.Server.Stop(); err != nil {
		t.Fatal(err)
	}
	secrets := map[string]string{"the admin token": e.srv.AdminToken, "the runner credential": reg.Token}
	var sawRunner bool
	err = filepath.WalkDir(e.srv.DataDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for what, s := range secrets {
			if bytes.Contains(b, []byte(s)) {
				t.Errorf("%s holds %s in plain text", p, what)
			}
		}
		sawRunner = sawRunner || bytes.Contains(b, []byte(runnerName))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !sawRunner {
		t.Fatalf("no file in %s holds the runner's name: the search looked in the wrong place", e.srv.DataDir)
	}
}
