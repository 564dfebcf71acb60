package cli_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/dstackai/dstack/api"
)

func TestUsersAndTokensCommands(t *testing.T) {
	t.Parallel()
	h := setup(t)
	srv := h.serve()

	r := h.run("users", "add", "alice")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "dstu_") || strings.Count(r.stdout, "\n") != 1 || !strings.Contains(r.stderr, "Added member alice") {
		t.Fatalf("users add: %+v", r)
	}
	aliceToken := strings.TrimSpace(r.stdout)
	r = h.run("users", "list", "--json")
	var users []api.UserInfo
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &users) != nil || len(users) != 2 || users[1].Name != "alice" || users[1].Admin {
		t.Fatalf("users list --json: %+v", r)
	}
	r = h.run("users")
	if r.code != 0 || !strings.Contains(r.stdout, "NAME") || !strings.Contains(r.stdout, "RUNNING JOBS") || !strings.Contains(r.stdout, "member") {
		t.Fatalf("users: %+v", r)
	}

	// Bad input: a clear error, a non-zero exit, nothing changed.
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"users", "add", "alice"}, 1, `"alice" exists`},
		{[]string{"users", "add", "ev\x1bil"}, 2, "control character"},
		{[]string{"users", "add", "Alice"}, 2, "lower case"},
		{[]string{"users", "set", "nobody", "--admin"}, 1, `no user named "nobody"`},
		{[]string{"users", "set", "alice"}, 2, "nothing to change"},
		{[]string{"users", "set", "alice", "--admin", "--member"}, 2, "not both"},
		{[]string{"users", "set", "alice", "--max-running", "-1"}, 2, "--max-running -1"},
		{[]string{"users", "set", "alice", "--storage-quota", "lots"}, 2, "--storage-quota \"lots\""},
		{[]string{"users", "set", "admin", "--member"}, 1, "last admin"},
		{[]string{"users", "rm", "admin"}, 1, "last admin"},
		{[]string{"users", "rm", "nobody"}, 1, `no user named "nobody"`},
		{[]string{"tokens", "create", "--expires", "soon"}, 2, "30d"},
		{[]string{"tokens", "create", "--name", "default"}, 1, `"default"`},
		{[]string{"tokens", "revoke", "nope"}, 1, "dstack tokens list"},
	} {
		r := h.run(tc.args...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.want) || r.stdout != "" {
			t.Errorf("dstack %q = %+v, want exit %d saying %q", tc.args, r, tc.code, tc.want)
		}
	}
	r = h.run("users", "list", "--json")
	if err := json.Unmarshal([]byte(r.stdout), &users); err != nil || len(users) != 2 || !users[0].Admin {
		t.Fatalf("users after refusals: %+v", r)
	}

	// An admin caps alice's running jobs and gives her a quota of her own,
	// then puts her back on the server's default.
	r = h.run("users", "set", "alice", "--max-running", "3", "--storage-quota", "2GiB")
	if r.code != 0 || !strings.Contains(r.stdout, "running jobs: at most 3") || !strings.Contains(r.stdout, "of 2") {
		t.Fatalf("users set --max-running --storage-quota: %+v", r)
	}
	r = h.run("users", "list", "--json")
	if err := json.Unmarshal([]byte(r.stdout), &users); err != nil || len(users) != 2 {
		t.Fatalf("users list: %+v", r)
	}
	if a := users[1]; a.Name != "alice" || a.MaxRunning != 3 || a.StorageQuota == nil || *a.StorageQuota != 2<<30 || a.Admin {
		t.Fatalf("alice after users set: %+v", a)
	}
	r = h.run("users", "list")
	if r.code != 0 || !strings.Contains(r.stdout, "0 of 3") || !strings.Contains(r.stdout, "STORAGE") {
		t.Errorf("users list shows no cap or storage: %+v", r)
	}
	r = h.run("users", "set", "alice", "--storage-quota", "default", "--max-running", "0")
	if r.code != 0 || !strings.Contains(r.stdout, "no cap") || !strings.Contains(r.stdout, "server default") {
		t.Fatalf("users set back to the defaults: %+v", r)
	}
	r = h.run("users", "list", "--json")
	users = nil
	if err := json.Unmarshal([]byte(r.stdout), &users); err != nil || len(users) != 2 || users[1].StorageQuota != nil || users[1].MaxRunning != 0 {
		t.Fatalf("alice back on the defaults: %+v", r)
	}

	// A member: admin commands are refused; tokens are their own.
	h.vars["DSTACK_TOKEN"] = aliceToken
	r = h.run("users", "list")
	if r.code != 1 || !strings.Contains(r.stderr, "only an admin can list users") {
		t.Errorf("users list as a member: %+v", r)
	}
	r = h.run("tokens", "create", "--name", "ci", "--expires", "30d")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "dstu_") || !strings.Contains(r.stderr, "expires at") {
		t.Fatalf("tokens create: %+v", r)
	}
	ciToken := strings.TrimSpace(r.stdout)
	r = h.run("tokens", "list", "--json")
	var toks []api.TokenInfo
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &toks) != nil || len(toks) != 2 || toks[0].Name != "ci" || toks[0].ExpiresAt == nil || !toks[1].Current {
		t.Fatalf("tokens list --json: %+v", r)
	}
	r = h.run("tokens")
	if r.code != 0 || strings.Contains(r.stdout, ciToken) || strings.Contains(r.stdout, aliceToken) || !strings.Contains(r.stdout, "default (this one)") {
		t.Fatalf("tokens shows a token's value, or not the current one: %+v", r)
	}
	// `dstack config` works with any valid token.
	r = h.run("config", "--server", srv.URL, "--token", ciToken)
	if r.code != 0 {
		t.Fatalf("config with a new token: %+v", r)
	}
	delete(h.vars, "DSTACK_TOKEN")
	r = h.run("tokens", "revoke", "default")
	if r.code != 0 || !strings.Contains(r.stdout, "Revoked token default") {
		t.Fatalf("tokens revoke: %+v", r)
	}
	h.vars["DSTACK_TOKEN"] = aliceToken
	r = h.run("tokens")
	if r.code != 1 || !strings.Contains(r.stderr, "refused the token") {
		t.Errorf("a revoked token: %+v", r)
	}
	delete(h.vars, "DSTACK_TOKEN")

	// Back as the admin: make alice an admin, then remove her.
	h.vars["DSTACK_TOKEN"] = srv.AdminToken
	r = h.run("users", "set", "alice", "--admin")
	if r.code != 0 || r.stdout != "alice is an admin\n" {
		t.Fatalf("users set --admin: %+v", r)
	}
	r = h.run("users", "rm", "alice")
	if r.code != 0 || r.stdout != "Removed user alice\n" {
		t.Fatalf("users rm: %+v", r)
	}
	delete(h.vars, "DSTACK_TOKEN")
	r = h.run("tokens")
	if r.code != 1 || !strings.Contains(r.stderr, "refused the token") {
		t.Errorf("a removed user's token: %+v", r)
	}
}
