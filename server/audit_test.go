package server_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/client"
	"github.com/dstackai/dstack/internal/testutil"
	"github.com/dstackai/dstack/server"
	"github.com/dstackai/dstack/server/servertest"
)

// auditLog reads the whole audit log as c, oldest first.
func auditLog(t *testing.T, c *client.Client) []api.AuditEntry {
	t.Helper()
	es, err := c.AuditList(context.Background(), time.Time{})
	if err != nil {
		t.Fatalf("read the audit log: %v", err)
	}
	for i, j := 0, len(es)-1; i < j; i, j = i+1, j-1 {
		es[i], es[j] = es[j], es[i]
	}
	return es
}

// detailOf decodes an entry's detail.
func detailOf(t *testing.T, e api.AuditEntry) map[string]any {
	t.Helper()
	var d map[string]any
	if err := json.Unmarshal(e.Detail, &d); err != nil {
		t.Fatalf("entry %s: detail %s is not a JSON object: %v", e.Action, e.Detail, err)
	}
	return d
}

// wantEntry checks an entry's who, what and from where, and the detail
// fields given.
func wantEntry(t *testing.T, e api.AuditEntry, user, action, target, from string, detail map[string]any) {
	t.Helper()
	if e.User != user || e.Action != action || e.Target != target || e.RemoteAddr != from {
		t.Errorf("entry %+v (detail %s), want user %q action %q target %q from %q", e, e.Detail, user, action, target, from)
	}
	if e.At.IsZero() || time.Since(e.At) > time.Minute || e.ID == "" {
		t.Errorf("entry %s: at %v, id %q: want now and an ID", action, e.At, e.ID)
	}
	d := detailOf(t, e)
	for k, v := range detail {
		if got, ok := d[k]; !ok || got != v {
			t.Errorf("entry %s: detail %s=%v, want %v (detail %s)", action, k, got, v, e.Detail)
		}
	}
}

// TestAuditRecordsChanges: sign-ins (refused ones too), sign-out, limits
// set and deleted, the on-demand switch and a runner removed each record an
// entry saying who, what, to what and from where, newest first in the log.
func TestAuditRecordsChanges(t *testing.T) {
	t.Parallel()
	e := setup(t, withBackends(localFake()))
	ctx := context.Background()
	base := e.srv.URL

	cookie, csrf := signIn(t, base, e.srv.AdminToken)
	rp := do(t, base, req{method: http.MethodPost, path: "/api/v1/session", body: `{"token":"dstu_wrongtoken"}`,
		header: map[string]string{"Content-Type": "application/json"}})
	wantError(t, "sign in with a wrong token", rp, http.StatusUnauthorized, api.CodeUnauthenticated)
	rp = do(t, base, req{method: http.MethodDelete, path: "/api/v1/session", header: map[string]string{"Cookie": cookie, "X-CSRF-Token": csrf}})
	if rp.status != http.StatusNoContent {
		t.Fatalf("sign out: %d %s", rp.status, rp.body)
	}

	put := func(max int) {
		t.Helper()
		if _, err := e.admin.LimitPut(ctx, api.LimitPutRequest{InstanceType: "local.small", Max: max}, false); err != nil {
			t.Fatalf("limit put: %v", err)
		}
	}
	put(2)
	put(3)
	if _, err := e.admin.LimitPut(ctx, api.LimitPutRequest{InstanceType: "local.small", Max: 9}, true); err != nil {
		t.Fatalf("limit put, dry run: %v", err)
	}
	if _, err := e.admin.OnDemandSet(ctx, false, false); err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.OnDemandSet(ctx, true, false); err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.LimitDelete(ctx, client.LimitKey{InstanceType: "local.small"}, false); err != nil {
		t.Fatal(err)
	}

	other := newUser(t, e.srv, "bob")
	rn := registerRunner(t, other, "box")
	if err := rn.RunnerOffline(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.RunnerRemove(ctx, "box"); err != nil {
		t.Fatal(err)
	}

	es := auditLog(t, e.admin)
	var actions []string
	for _, en := range es {
		actions = append(actions, en.Action)
	}
	want := []string{"session.create", "session.fail", "session.delete", "limit.put", "limit.put",
		"ondemand.disable", "ondemand.enable", "limit.delete", "runner.rm"}
	if strings.Join(actions, " ") != strings.Join(want, " ") {
		t.Fatalf("audit log actions %v, want %v (a dry run records nothing)", actions, want)
	}
	const from = "127.0.0.1"
	limit := "local/local/local.small (on-demand)"
	wantEntry(t, es[0], "admin", "session.create", "admin", from, nil)
	wantEntry(t, es[1], "", "session.fail", "", from, nil)
	if d := detailOf(t, es[1]); !strings.Contains(d["reason"].(string), "token was refused") {
		t.Errorf("a refused sign-in's reason is %q", d["reason"])
	}
	if strings.Contains(string(es[1].Detail), "wrongtoken") {
		t.Errorf("a refused sign-in records the token: %s", es[1].Detail)
	}
	wantEntry(t, es[2], "admin", "session.delete", "admin", from, nil)
	wantEntry(t, es[3], "admin", "limit.put", limit, from, map[string]any{"max": 2.0, "created": true})
	wantEntry(t, es[4], "admin", "limit.put", limit, from, map[string]any{"max": 3.0, "previous_max": 2.0, "created": false})
	wantEntry(t, es[5], "admin", "ondemand.disable", "on-demand runners", from, map[string]any{"was_enabled": true})
	wantEntry(t, es[6], "admin", "ondemand.enable", "on-demand runners", from, map[string]any{"was_enabled": false})
	wantEntry(t, es[7], "admin", "limit.delete", limit, from, map[string]any{"max": 3.0})
	wantEntry(t, es[8], "admin", "runner.rm", "box", from, map[string]any{"owner": "bob", "hostname": "box.example"})

	// Since keeps the newer entries; pages of 2 give the whole log.
	since := es[7].At
	newer, err := e.admin.AuditList(ctx, since)
	if err != nil || len(newer) != 2 || newer[0].Action != "runner.rm" || newer[1].Action != "limit.delete" {
		t.Errorf("audit since %v = %+v, %v; want runner.rm and limit.delete", since, newer, err)
	}
	var paged []api.AuditEntry
	o := client.AuditListOptions{Limit: 2}
	for {
		page, next, err := e.admin.AuditListPage(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		paged = append(paged, page...)
		if next == "" {
			break
		}
		o.After = next
	}
	if len(paged) != len(es) || paged[0].ID != es[len(es)-1].ID {
		t.Errorf("pages of 2 gave %d entries (newest %s), want %d newest first", len(paged), paged[0].ID, len(es))
	}
}

// TestAuditRecordsAWSChanges: configuring and clearing the AWS account are
// recorded with the access key ID and never the secret.
func TestAuditRecordsAWSChanges(t *testing.T) {
	t.Parallel()
	e := setupAWS(t)
	if rp := e.putAWS(t, e.srv.AdminToken, awsRequest(awsSecret)); rp.status != http.StatusOK {
		t.Fatalf("aws config: %d %s", rp.status, rp.body)
	}
	if err := e.admin.AWSDelete(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	es := auditLog(t, e.admin)
	if len(es) != 2 {
		t.Fatalf("audit log %+v, want aws.put and aws.delete", es)
	}
	wantEntry(t, es[0], "admin", "aws.put", awsKeyID, "127.0.0.1", map[string]any{"region": "eu-west-1", "secret_changed": true})
	wantEntry(t, es[1], "admin", "aws.delete", awsKeyID, "127.0.0.1", nil)
	for _, en := range es {
		if strings.Contains(string(en.Detail), awsSecret) || strings.Contains(string(en.Detail), awsSecret[len(awsSecret)-4:]) {
			t.Errorf("entry %s holds the secret: %s", en.Action, en.Detail)
		}
	}
}

// TestAuditOfferedToAdminsOnly: a member is refused the log with a 403 that
// says who can read it; a since that is not a time is a 400 saying what to
// give.
func TestAuditOfferedToAdminsOnly(t *testing.T) {
	t.Parallel()
	e := setup(t)
	member := newUser(t, e.srv, "alice")
	_, err := member.AuditList(context.Background(), time.Time{})
	wantAPIError(t, "a member reads the audit log", err, http.StatusForbidden, api.CodeForbidden)
	if err == nil || err.Error() != "only an admin can read the audit log: ask an admin of this server" {
		t.Errorf("a member's refusal says %v", err)
	}
	for _, q := range []string{"since=yesterday", "since=24h", "limit=0", "limit=1001", "after=not-a-cursor!"} {
		rp := do(t, e.srv.URL, req{method: http.MethodGet, path: "/api/v1/audit?" + q, token: e.srv.AdminToken})
		wantError(t, "GET /audit?"+q, rp, http.StatusBadRequest, api.CodeInvalid)
	}
	rp := do(t, e.srv.URL, req{method: http.MethodGet, path: "/api/v1/audit"})
	wantError(t, "GET /audit without a token", rp, http.StatusUnauthorized, api.CodeUnauthenticated)
}

// TestAuditRecordsTheServersRunnerRemoval: a runner the server removes
// past --runner-retention is recorded as the server's doing.
func TestAuditRecordsTheServersRunnerRemoval(t *testing.T) {
	t.Parallel()
	clock := testutil.NewClock(time.Now())
	e := setup(t, withClock(clock), servertest.WithConfig(func(c *server.Config) {
		c.RunnerRetention = time.Hour
		c.HeartbeatTimeout = time.Second
	}))
	gone := registerRunner(t, e.admin, "gone")
	if err := gone.RunnerOffline(context.Background()); err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Hour)
	var es []api.AuditEntry
	testutil.Eventually(t, "the removal in the audit log", func() bool {
		es = auditLog(t, e.admin)
		return len(es) > 0
	})
	d := detailOf(t, es[0])
	if es[0].User != "(server)" || es[0].Action != "runner.rm" || es[0].Target != "gone" || es[0].RemoteAddr != "" ||
		d["owner"] != "admin" || !strings.Contains(d["reason"].(string), "--runner-retention 1h0m0s") {
		t.Errorf("entry %+v (detail %s), want the server's removal of runner gone", es[0], es[0].Detail)
	}
}

// TestAuditFailureIsLoud: when the audit log cannot be written, a change is
// made but answered 500 saying it was not recorded, a sign-in is refused,
// and both are counted in /metrics.
func TestAuditFailureIsLoud(t *testing.T) {
	t.Parallel()
	logs := &logBuffer{}
	e := setup(t, withBackends(localFake()), servertest.WithLogger(slog.New(slog.NewTextHandler(logs, nil))))
	ctx := context.Background()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(e.srv.DataDir, "dstack.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, "ALTER TABLE audit RENAME TO audit_gone"); err != nil {
		t.Fatal(err)
	}

	_, err = e.admin.LimitPut(ctx, api.LimitPutRequest{InstanceType: "local.small", Max: 2}, false)
	wantAPIError(t, "a limit put that cannot be recorded", err, http.StatusInternalServerError, api.CodeInternal)
	if err == nil || !strings.Contains(err.Error(), "the change was made, but it could not be recorded in the audit log") {
		t.Errorf("the answer says %v", err)
	}
	if ls, err := e.admin.LimitList(ctx); err != nil || len(ls) != 1 || ls[0].Max != 2 {
		t.Errorf("limits = %+v, %v; want the change made", ls, err)
	}
	rp := do(t, e.srv.URL, req{method: http.MethodPost, path: "/api/v1/session", body: `{"token":"` + e.srv.AdminToken + `"}`,
		header: map[string]string{"Content-Type": "application/json"}})
	wantError(t, "a sign-in that cannot be recorded", rp, http.StatusServiceUnavailable, api.CodeUnavailable, "could not be recorded in the audit log")
	if len(rp.header.Values("Set-Cookie")) != 0 {
		t.Errorf("a refused sign-in sets a cookie: %v", rp.header.Values("Set-Cookie"))
	}
	if got := scrape(t, e.srv.URL)["dstack_audit_failures_total"]; got != 2 {
		t.Errorf("dstack_audit_failures_total = %v, want 2", got)
	}
	if l := logs.String(); !strings.Contains(l, "level=ERROR") || !strings.Contains(l, "audit entry not recorded") || !strings.Contains(l, "action=limit.put") {
		t.Errorf("the server log does not have the entry at ERROR:\n%s", l)
	}
}

// TestAuditRecordsUsersAndTokens: users added, changed and removed and
// tokens made and revoked are recorded, never with a token's value.
func TestAuditRecordsUsersAndTokens(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	made, err := e.admin.UserCreate(ctx, api.UserCreateRequest{Name: "carol"})
	if err != nil {
		t.Fatal(err)
	}
	yes := true
	if _, err := e.admin.UserPatch(ctx, "carol", api.UserPatchRequest{Admin: &yes}); err != nil {
		t.Fatal(err)
	}
	carol := e.admin.WithToken(made.Token)
	tok, err := carol.TokenCreate(ctx, api.TokenCreateRequest{Name: "laptop"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := carol.TokenRevoke(ctx, "laptop", false); err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.UserDelete(ctx, "carol"); err != nil {
		t.Fatal(err)
	}
	es := auditLog(t, e.admin)
	if len(es) != 5 {
		t.Fatalf("audit log %+v, want 5 entries", es)
	}
	wantEntry(t, es[0], "admin", "user.add", "carol", "127.0.0.1", map[string]any{"admin": false})
	wantEntry(t, es[1], "admin", "user.set", "carol", "127.0.0.1", map[string]any{"admin": true})
	wantEntry(t, es[2], "carol", "token.create", "laptop", "127.0.0.1", nil)
	wantEntry(t, es[3], "carol", "token.revoke", "laptop", "127.0.0.1", nil)
	wantEntry(t, es[4], "admin", "user.rm", "carol", "127.0.0.1", nil)
	for _, en := range es {
		if strings.Contains(string(en.Detail), made.Token) || strings.Contains(string(en.Detail), tok.Token) {
			t.Errorf("entry %s holds a token: %s", en.Action, en.Detail)
		}
	}
}
