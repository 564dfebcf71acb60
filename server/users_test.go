package server_test

import (
	"context"
	"github.com/dstackai/dstack/internal/testutil"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
)

func TestUsersBadInputChangesNothing(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	if _, err := e.admin.UserCreate(ctx, api.UserCreateRequest{Name: "alice"}); err != nil {
		t.Fatal(err)
	}
	tok := e.srv.AdminToken
	for _, tc := range []struct {
		what   string
		rq     req
		status int
		code   string
		parts  []string
	}{
		{"duplicate name", req{method: "POST", path: "/api/v1/users", body: `{"name":"alice"}`}, 409, api.CodeConflict, []string{`"alice" exists`}},
		{"control character", req{method: "POST", path: "/api/v1/users", body: `{"name":"ev\u001bil"}`}, 400, api.CodeInvalid, []string{"control character"}},
		{"upper case", req{method: "POST", path: "/api/v1/users", body: `{"name":"Bob"}`}, 400, api.CodeInvalid, []string{"lower case"}},
		{"empty name", req{method: "POST", path: "/api/v1/users", body: `{"name":""}`}, 400, api.CodeInvalid, []string{"empty"}},
		{"unknown user set", req{method: "PATCH", path: "/api/v1/users/nobody", body: `{"admin":true}`}, 404, api.CodeNotFound, []string{`no user named "nobody"`, "dstack users list"}},
		{"unknown user rm", req{method: "DELETE", path: "/api/v1/users/nobody"}, 404, api.CodeNotFound, []string{`no user named "nobody"`}},
		{"nothing to set", req{method: "PATCH", path: "/api/v1/users/alice", body: `{}`}, 400, api.CodeInvalid, []string{"nothing to change"}},
		{"last admin demoted", req{method: "PATCH", path: "/api/v1/users/admin", body: `{"admin":false}`}, 409, api.CodeConflict, []string{"last admin", "--admin"}},
		{"last admin removed", req{method: "DELETE", path: "/api/v1/users/admin"}, 409, api.CodeConflict, []string{"last admin"}},
		{"token name taken", req{method: "POST", path: "/api/v1/tokens", body: `{"name":"default"}`}, 409, api.CodeConflict, []string{`"default"`}},
		{"token name with newline", req{method: "POST", path: "/api/v1/tokens", body: `{"name":"a\nb"}`}, 400, api.CodeInvalid, []string{"control character"}},
		{"bad expiry", req{method: "POST", path: "/api/v1/tokens", body: `{"name":"x","expires_in":"soon"}`}, 400, api.CodeInvalid, []string{"30d"}},
		{"unknown token", req{method: "DELETE", path: "/api/v1/tokens/nope"}, 404, api.CodeNotFound, []string{"dstack tokens list"}},
		{"bad runners flag", req{method: "DELETE", path: "/api/v1/tokens/default?runners=maybe"}, 400, api.CodeInvalid, []string{"true or false"}},
	} {
		tc.rq.token = tok
		wantError(t, tc.what, do(t, e.srv.URL, tc.rq), tc.status, tc.code, tc.parts...)
	}
	users, err := e.admin.UserList(ctx)
	if err != nil || len(users) != 2 || users[0].Name != "admin" || !users[0].Admin || users[1].Name != "alice" && users[1].Admin {
		t.Errorf("users after refusals = %+v, %v; want admin (admin) and alice", users, err)
	}
	toks, err := e.admin.TokenList(ctx)
	if err != nil || len(toks) != 1 || toks[0].Name != "default" || !toks[0].Current {
		t.Errorf("admin's tokens after refusals = %+v, %v; want only default, current", toks, err)
	}
}

func TestTokenExpiresAndRevokeEndsSession(t *testing.T) {
	t.Parallel()
	clock := testutil.NewClock(time.Now())
	e := setup(t, withClock(clock))
	ctx := context.Background()
	tk, err := e.admin.TokenCreate(ctx, api.TokenCreateRequest{Name: "short", ExpiresIn: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	if tk.ExpiresAt == nil || tk.ExpiresAt.Sub(clock.Now().Add(time.Hour)).Abs() > time.Millisecond || !strings.HasPrefix(tk.Token, "dstu_") {
		t.Fatalf("created token = %+v", tk)
	}
	short := e.admin.WithToken(tk.Token)
	if _, err := short.Me(ctx); err != nil {
		t.Fatalf("a new token: %v", err)
	}
	cookie, _ := signIn(t, e.srv.URL, tk.Token)
	page := req{method: http.MethodGet, path: "/api/v1/me", header: map[string]string{"Cookie": cookie}}
	if rp := do(t, e.srv.URL, page); rp.status != http.StatusOK {
		t.Fatalf("session of the token: %d %s", rp.status, rp.body)
	}
	clock.Advance(time.Hour)
	wantError(t, "an expired token", do(t, e.srv.URL, req{method: "GET", path: "/api/v1/me", token: tk.Token}),
		http.StatusUnauthorized, api.CodeUnauthenticated, `"short" expired at`, "dstack tokens create")
	wantError(t, "the session of an expired token", do(t, e.srv.URL, page), http.StatusUnauthorized, api.CodeUnauthenticated, "sign in again")

	// Revoking a token ends its session on the next request.
	tk2, err := e.admin.TokenCreate(ctx, api.TokenCreateRequest{Name: "laptop"})
	if err != nil {
		t.Fatal(err)
	}
	cookie2, _ := signIn(t, e.srv.URL, tk2.Token)
	page2 := req{method: http.MethodGet, path: "/api/v1/me", header: map[string]string{"Cookie": cookie2}}
	if rp := do(t, e.srv.URL, page2); rp.status != http.StatusOK {
		t.Fatalf("session: %d %s", rp.status, rp.body)
	}
	if _, err := e.admin.TokenRevoke(ctx, tk2.ID, false); err != nil {
		t.Fatal(err)
	}
	wantError(t, "the session of a revoked token", do(t, e.srv.URL, page2), http.StatusUnauthorized, api.CodeUnauthenticated, "no longer valid")
	wantError(t, "a revoked token", do(t, e.srv.URL, req{method: "GET", path: "/api/v1/me", token: tk2.Token}), http.StatusUnauthorized, api.CodeUnauthenticated, "revoked")
	if _, err := e.admin.Me(ctx); err != nil {
		t.Errorf("the admin's other token after a revoke: %v", err)
	}
}

func TestRemovedUserAndRevokedTokenRunnersAreRefused(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	res, err := e.admin.UserCreate(ctx, api.UserCreateRequest{Name: "dana"})
	if err != nil {
		t.Fatal(err)
	}
	dana := e.srv.Client().WithToken(res.Token)
	cookie, _ := signIn(t, e.srv.URL, res.Token)
	rc := registerRunner(t, dana, "dana-box")
	if err := rc.RunnerHeartbeat(ctx, api.HeartbeatRequest{}); err != nil {
		t.Fatal(err)
	}
	// A token's runners are revoked with it when asked.
	ci, err := dana.TokenCreate(ctx, api.TokenCreateRequest{Name: "ci"})
	if err != nil {
		t.Fatal(err)
	}
	rc2 := registerRunner(t, e.srv.Client().WithToken(ci.Token), "dana-ci-box")
	rv, err := dana.TokenRevoke(ctx, "ci", true)
	if err != nil || len(rv.Runners) != 1 || rv.Runners[0] != "dana-ci-box" {
		t.Fatalf("revoke with runners = %+v, %v", rv, err)
	}
	wantAPIError(t, "heartbeat of a runner revoked with its token", rc2.RunnerHeartbeat(ctx, api.HeartbeatRequest{}), http.StatusUnauthorized, api.CodeUnauthenticated)
	if err := rc.RunnerHeartbeat(ctx, api.HeartbeatRequest{}); err != nil {
		t.Fatalf("the other token's runner: %v", err)
	}

	if _, err := e.admin.UserDelete(ctx, "dana"); err != nil {
		t.Fatal(err)
	}
	_, err = dana.Me(ctx)
	wantAPIError(t, "a removed user's token", err, http.StatusUnauthorized, api.CodeUnauthenticated)
	wantError(t, "a removed user's session", do(t, e.srv.URL, req{method: "GET", path: "/api/v1/me", header: map[string]string{"Cookie": cookie}}),
		http.StatusUnauthorized, api.CodeUnauthenticated)
	wantAPIError(t, "a removed user's runner", rc.RunnerHeartbeat(ctx, api.HeartbeatRequest{}), http.StatusUnauthorized, api.CodeUnauthenticated)
	_, err = e.admin.UserCreate(ctx, api.UserCreateRequest{Name: "dana"})
	wantAPIError(t, "adding a removed user's name", err, http.StatusConflict, api.CodeConflict)
	users, _ := e.admin.UserList(ctx)
	if len(users) != 1 {
		t.Errorf("users after removal = %+v, want the admin only", users)
	}
}
