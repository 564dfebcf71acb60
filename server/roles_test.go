package server_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/client"
	"github.com/dstackai/dstack/server"
)

// TestRouteTableIsTheSource: every route the server's source registers is
// in the route table with a role, and the table has no other: a route
// registered on the mux directly, without a role, fails here.
func TestRouteTableIsTheSource(t *testing.T) {
	t.Parallel()
	e := setup(t)
	table := server.RouteRoles(e.srv.Server)
	seen := map[string]bool{}
	for _, r := range server.Routes(t) {
		key := r.String()
		seen[key] = true
		rl, ok := table[key]
		if !ok {
			t.Errorf("route %s is registered without a role: register it with the router's public, member, admin, runner, page or adminPage (roles.go)", key)
			continue
		}
		want := map[string]string{"member": "userToken", "admin": "userToken", "runner": "runnerToken"}[rl]
		if r.Auth != want {
			t.Errorf("route %s has role %s but its source takes the credential %q", key, rl, r.Auth)
		}
	}
	for key := range table {
		if !seen[key] {
			t.Errorf("route table has %s, which the source reader did not find", key)
		}
	}
	// Only the router touches the mux: a HandleFunc anywhere else would
	// register a route no role covers.
	direct := regexp.MustCompile(`\bmux\.Handle(Func)?\(`)
	files, _ := filepath.Glob("*.go")
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") || f == "roles.go" {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if direct.MatchString(line) && !strings.Contains(line, `"/api/"`) {
				t.Errorf("%s registers a route on the mux directly: %s", f, strings.TrimSpace(line))
			}
		}
	}
}

// roleEnv is a server with an admin, two members (alice and bob), alice's
// objects (a done run with an artifact, a tag, a runner, a spare token),
// and carol, a member for the admin's user routes to change.
type roleEnv struct {
	*apiEnv
	alice, bob                        *client.Client
	aliceToken, bobToken, runnerToken string
	run                               *api.Run
	aliceCookie, adminCookie          string
	aliceCSRF, adminCSRF              string
}

func newRoleEnv(t *testing.T) *roleEnv {
	t.Helper()
	ctx := context.Background()
	e := &roleEnv{apiEnv: setup(t)}
	add := func(name string) (*client.Client, string) {
		res, err := e.admin.UserCreate(ctx, api.UserCreateRequest{Name: name})
		if err != nil {
			t.Fatalf("add user %s: %v", name, err)
		}
		return e.srv.Client().WithToken(res.Token), res.Token
	}
	e.alice, e.aliceToken = add("alice")
	e.bob, e.bobToken = add("bob")
	add("carol")
	if _, err := e.alice.TokenCreate(ctx, api.TokenCreateRequest{Name: "alice-spare"}); err != nil {
		t.Fatal(err)
	}
	code, err := e.alice.CodeUpload(ctx, strings.NewReader(string(codeArchive(t, map[string]string{"README": "alice\n"}))))
	if err != nil {
		t.Fatal(err)
	}
	e.run, err = e.alice.RunSubmit(ctx, api.RunSubmitRequest{Workflow: "train", CodeID: code.CodeID, Jobs: []api.JobSpec{bashJob("train")}})
	if err != nil {
		t.Fatal(err)
	}
	e.runnerToken = registerRunnerToken(t, e.alice, "alice-runner")
	rc := e.alice.WithToken(e.runnerToken)
	a := claim(t, rc)
	setStatus(t, rc, a, api.StatusRunning)
	if err := rc.JobArtifactUpload(ctx, a.Job.ID, a.Lease, "model/weights.bin", strings.NewReader("w"), 1); err != nil {
		t.Fatal(err)
	}
	setStatus(t, rc, a, api.StatusDone)
	if _, err := e.alice.TagPut(ctx, "alice-tag", e.run.Name, false); err != nil {
		t.Fatal(err)
	}
	e.aliceCookie, e.aliceCSRF = signIn(t, e.srv.URL, e.aliceToken)
	e.adminCookie, e.adminCSRF = signIn(t, e.srv.URL, e.srv.AdminToken)
	return e
}

// caller is who makes a request in the role test.
type caller struct {
	name   string
	token  string // bearer
	cookie string // for pages
}

// roleRequest is a request to r that only its caller's role and ownership
// can refuse, about alice's objects.
func (e *roleEnv) roleRequest(t *testing.T, r server.Route, c caller) req {
	t.Helper()
	job := e.run.Jobs[0]
	vals := map[string]string{"name": e.run.Name, "id": job.ID, "dep": job.ID, "path": "model/weights.bin", "sha256": "abababababababababababababababababababababababababababababababab",
		"os": "linux", "arch": "amd64", "ref": "alice-runner"}
	switch {
	case strings.HasPrefix(r.Path, "/api/v1/tags/"):
		vals["name"] = "alice-tag"
	case strings.HasPrefix(r.Path, "/api/v1/users/"):
		vals["name"] = "carol"
	case strings.HasPrefix(r.Path, "/api/v1/tokens/"):
		vals["ref"] = "alice-spare"
	}
	bodies := map[string]string{
		"POST /api/v1/runs/{name}/stop":        `{"abort":true}`,
		"PUT /api/v1/tags/{name}":              fmt.Sprintf(`{"run_name":%q}`, e.run.Name),
		"POST /api/v1/users":                   fmt.Sprintf(`{"name":"made-by-%s"}`, c.name),
		"PATCH /api/v1/users/{name}":           `{"admin":false}`,
		"POST /api/v1/tokens":                  fmt.Sprintf(`{"name":"made-by-%s"}`, c.name),
		"POST /api/v1/runners/register":        fmt.Sprintf(`{"name":"runner-of-%s","resources":{"cpus":1,"memory_mib":1024}}`, c.name),
		"PUT /api/v1/on-demand":                `{"enabled":true}`,
		"POST /api/v1/runner/heartbeat":        `{}`,
		"POST /api/v1/runner/claim":            `{"free":{"cpus":1,"memory_mib":1024}}`,
		"POST /api/v1/runner/jobs/{id}/status": `{"status":"done"}`,
	}
	rq := req{method: r.Method, path: fill(t, strings.TrimSuffix(r.Path, "{$}"), vals), body: bodies[r.String()], token: c.token,
		header: map[string]string{api.LeaseHeader: "1"}}
	if c.cookie != "" && (r.Auth == "" || c.token == "") {
		rq.token = ""
		rq.header["Cookie"] = c.cookie
	}
	if r.String() == "POST /api/v1/runner/jobs/{id}/logs" {
		rq.path += "?offset=0"
	}
	return rq
}

// callHead sends rq and returns the status and, unless it is a stream, the
// body: the role test must not wait for the end of a stream.
func callHead(t *testing.T, base string, rq req) (int, string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hr, err := http.NewRequestWithContext(ctx, rq.method, base+rq.path, strings.NewReader(rq.body))
	if err != nil {
		t.Fatal(err)
	}
	if rq.token != "" {
		hr.Header.Set("Authorization", "Bearer "+rq.token)
	}
	for k, v := range rq.header {
		hr.Header.Set(k, v)
	}
	if rq.body != "" && strings.HasPrefix(rq.body, "{") {
		hr.Header.Set("Content-Type", "application/json")
	}
	resp, err := noRedirect.Do(hr)
	if err != nil {
		t.Fatalf("%s %s: %v", rq.method, rq.path, err)
	}
	defer resp.Body.Close()
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		return resp.StatusCode, ""
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(b)
}

// ownedObject reports whether a route names one of alice's objects in its
// path (or body), which another member must get as unknown (404).
func ownedObject(r server.Route) bool {
	switch {
	case strings.HasPrefix(r.Path, "/api/v1/users"), strings.HasPrefix(r.Path, "/api/v1/runner/"):
		return false
	case strings.Contains(r.Path, "{"):
		return true
	}
	return r.String() == "PUT /api/v1/tags/{name}"
}

// TestEveryRouteChecksRoleAndOwner enumerates the route table and calls
// each route as no one, a runner credential, another member (bob), the
// owning member (alice) and an admin, checking each answer against the
// route's role: 401 without a credential, 403 for the wrong kind of
// credential or a member on an admin's route, 404 for another member on
// alice's objects, and no refusal for whoever may call it.
func TestEveryRouteChecksRoleAndOwner(t *testing.T) {
	t.Parallel()
	e := newRoleEnv(t)
	table := server.RouteRoles(e.srv.Server)
	routes := server.Routes(t)
	sort.Slice(routes, func(i, j int) bool { return routes[i].String() < routes[j].String() })
	callers := []caller{
		{name: "none"},
		{name: "runner", token: e.runnerToken},
		{name: "bob", token: e.bobToken},
		{name: "alice", token: e.aliceToken, cookie: e.aliceCookie},
		{name: "admin", token: e.srv.AdminToken, cookie: e.adminCookie},
	}
	refused := func(st int) bool { return st == http.StatusUnauthorized || st == http.StatusForbidden }
	for _, r := range routes {
		rl := table[r.String()]
		for _, c := range callers {
			if c.name == "bob" && (rl == "page" || rl == "admin page") {
				continue // bob has no session; alice stands for members on pages
			}
			rq := e.roleRequest(t, r, c)
			if rq.header["Cookie"] != "" && r.Method != http.MethodGet {
				continue
			}
			st, body := callHead(t, e.srv.URL, rq)
			what := fmt.Sprintf("%s (%s) as %s", r, rl, c.name)
			fail := func(want string) { t.Errorf("%s: %d %.300s, want %s", what, st, body, want) }
			switch rl {
			case "public":
				if refused(st) {
					fail("no refusal (a public route)")
				}
			case "page", "admin page":
				switch {
				case c.name == "none" || c.name == "runner":
					if st != http.StatusSeeOther {
						fail("303 to /login")
					}
				case r.Path == "/{$}":
					if st != http.StatusSeeOther {
						fail("303 to /runs")
					}
				case rl == "admin page" && c.name == "alice":
					if st != http.StatusForbidden || !strings.Contains(body, "only an admin can") {
						fail("403 only an admin can")
					}
				case st != http.StatusOK:
					fail("200")
				}
			case "runner":
				switch c.name {
				case "none":
					if st != http.StatusUnauthorized {
						fail("401")
					}
				case "runner":
					if refused(st) {
						fail("no refusal")
					}
				default:
					if st != http.StatusForbidden || !strings.Contains(body, "user token cannot call runner endpoints") {
						fail("403 for a user token")
					}
				}
			case "member", "admin":
				switch {
				case c.name == "none":
					if st != http.StatusUnauthorized {
						fail("401")
					}
				case c.name == "runner":
					if st != http.StatusForbidden || !strings.Contains(body, "runner credential cannot call user endpoints") {
						fail("403 for a runner credential")
					}
				case rl == "admin" && c.name != "admin":
					if st != http.StatusForbidden || !strings.Contains(body, "only an admin can") {
						fail("403 only an admin can")
					}
				case c.name == "bob" && ownedObject(r):
					if st != http.StatusNotFound {
						fail("404, as for an unknown object")
					}
				case refused(st):
					fail("no refusal")
				}
				if c.name == "bob" && st < 300 {
					for _, secret := range []string{e.run.Name, "alice-runner", "alice-tag", "alice-spare", "weights.bin"} {
						if strings.Contains(body, secret) {
							t.Errorf("%s: the answer shows alice's %q: %.300s", what, secret, body)
						}
					}
				}
			default:
				t.Errorf("route %s has no known role %q", r, rl)
			}
		}
	}

	// The refusals changed nothing of what the admin's routes manage.
	ctx := context.Background()
	users, err := e.admin.UserList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, u := range users {
		names = append(names, u.Name)
	}
	// carol was removed by the admin's DELETE; made-by-admin added by its
	// POST; no member's POST added a user.
	if got := strings.Join(names, " "); got != "admin alice bob made-by-admin" {
		t.Errorf("users after the role test = %s, want admin alice bob made-by-admin", got)
	}
}

// TestAdminReadsAndStopsEveryRun: an admin reads another user's run, its
// logs and artifacts by name, and may stop it; a member cannot.
func TestAdminReadsAndStopsEveryRun(t *testing.T) {
	t.Parallel()
	e := newRoleEnv(t)
	ctx := context.Background()
	if r, err := e.admin.RunGet(ctx, e.run.Name); err != nil || r.Name != e.run.Name {
		t.Fatalf("admin reads alice's run: %+v, %v", r, err)
	}
	if fs, err := e.admin.ArtifactList(ctx, e.run.Name); err != nil || len(fs) != 1 {
		t.Errorf("admin lists alice's artifacts: %+v, %v", fs, err)
	}
	_, err := e.bob.RunGet(ctx, e.run.Name)
	wantAPIError(t, "bob reads alice's run", err, http.StatusNotFound, api.CodeNotFound)
	_, err = e.bob.RunStop(ctx, e.run.Name, false)
	wantAPIError(t, "bob stops alice's run", err, http.StatusNotFound, api.CodeNotFound)
}
