package e2e

import (
	"encoding/json"
	"fmt"
	"github.com/dstackai/dstack/internal/testutil"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/dstackai/dstack/api"
)

// TestTeams: with the real binaries, an admin adds two members; each sees
// only their own runs and runners; a revoked token fails on its next call;
// a removed user's runner is refused; `dstack server admin-token --reset`
// recovers the admin while the server runs.
func TestTeams(t *testing.T) {
	eachDB(t, func(t *testing.T, dsn string) {
		c := newCluster(t, dsn)
		add := func(name string) []string {
			r := c.dstack("", "users", "add", name)
			if r.code != 0 || !strings.HasPrefix(r.stdout, "dstu_") {
				t.Fatalf("users add %s: %s", name, r)
			}
			return []string{"DSTACK_TOKEN=" + strings.TrimSpace(r.stdout)}
		}
		alice, bob := add("alice"), add("bob")
		aliceToken := strings.TrimPrefix(alice[0], "DSTACK_TOKEN=")

		// alice's runner runs alice's run.
		dir := project(t, map[string]string{".dstack/workflows.yaml": "workflows:\n  - name: hello\n    provider: bash\n    commands: [echo hello from alice]\n"})
		runner := c.start("runner alice-box", "", c.configRunner("alice-box", aliceToken), bins.runner, "start")
		testutil.EventuallyWithin(t, startTimeout, "alice's runner to register", func() bool {
			return runner.exited() || strings.Contains(runner.stdout(), "waiting for jobs")
		})
		r := c.dstackEnv(dir, alice, "run", "hello")
		if r.code != 0 || !strings.Contains(r.stdout, "hello from alice") {
			t.Fatalf("alice's run: %s", r)
		}
		run := runName(t, r.stderr+r.stdout)

		// Isolation: bob sees none of it; members cannot manage users.
		if r := c.dstackEnv("", bob, "ps", "-a"); r.code != 0 || strings.Contains(r.stdout, run) {
			t.Errorf("bob's ps shows alice's run: %s", r)
		}
		if r := c.dstackEnv("", bob, "logs", run); r.code == 0 || !strings.Contains(r.stderr, "no run") {
			t.Errorf("bob reads alice's logs: %s", r)
		}
		if r := c.dstackEnv("", bob, "runners", "rm", "alice-box"); r.code == 0 || !strings.Contains(r.stderr, "no runner") {
			t.Errorf("bob removes alice's runner: %s", r)
		}
		if r := c.dstackEnv("", bob, "users", "list"); r.code != 1 || !strings.Contains(r.stderr, "only an admin can") {
			t.Errorf("bob lists users: %s", r)
		}
		if r := c.dstack("", "logs", run); r.code != 0 || !strings.Contains(r.stdout, "hello from alice") {
			t.Errorf("the admin reads alice's logs: %s", r)
		}

		// A revoked token fails on its next call.
		r = c.dstackEnv("", alice, "tokens", "create", "--name", "laptop", "--expires", "30d")
		if r.code != 0 {
			t.Fatalf("tokens create: %s", r)
		}
		laptop := []string{"DSTACK_TOKEN=" + strings.TrimSpace(r.stdout)}
		if r := c.dstackEnv("", laptop, "ps"); r.code != 0 {
			t.Fatalf("ps with a new token: %s", r)
		}
		if r := c.dstackEnv("", alice, "tokens", "revoke", "laptop"); r.code != 0 {
			t.Fatalf("tokens revoke: %s", r)
		}
		if r := c.dstackEnv("", laptop, "ps"); r.code != 1 || !strings.Contains(r.stderr, "refused the token") {
			t.Errorf("ps with a revoked token: %s", r)
		}

		// A removed user's runner is refused (and so are their tokens).
		if r := c.dstack("", "users", "rm", "alice"); r.code != 0 {
			t.Fatalf("users rm: %s", r)
		}
		testutil.EventuallyWithin(t, startTimeout, "alice's runner to be refused", func() bool {
			return strings.Contains(runner.output(), "refused the token")
		})
		if r := c.dstackEnv("", alice, "ps"); r.code != 1 || !strings.Contains(r.stderr, "refused the token") {
			t.Errorf("a removed user's token: %s", r)
		}
		var users []api.UserInfo
		if r := c.dstack("", "users", "list", "--json"); r.code != 0 || json.Unmarshal([]byte(r.stdout), &users) != nil || len(users) != 2 {
			t.Errorf("users after removal: %s", r)
		}

		// Recovery while the server runs.
		where := []string{"--data-dir", filepath.Join(c.dir, "server")}
		if dsn != "" {
			where = []string{"--db", dsn}
		}
		r = c.cli(t, "", []string{"DSTACK_TOKEN="}, append([]string{"server", "admin-token", "--reset"}, where...)...)
		if r.code != 0 || !strings.HasPrefix(r.stdout, "dstu_") {
			t.Fatalf("admin-token --reset: %s", r)
		}
		fresh := []string{"DSTACK_TOKEN=" + strings.TrimSpace(r.stdout)}
		if r := c.dstack("", "ps"); r.code != 1 || !strings.Contains(r.stderr, "refused the token") {
			t.Errorf("the old admin token after a reset: %s", r)
		}
		if r := c.dstackEnv("", fresh, "users", "list"); r.code != 0 || !strings.Contains(r.stdout, "admin") {
			t.Errorf("the new admin token: %s", r)
		}
	})
}

// TestUIUsersAndTokens: the Users page adds a user (its token shown once),
// changes a role and removes a user; Settings creates a token (shown once)
// and lists it; revoking the token a browser signed in with ends its
// session at once.
func TestUIUsersAndTokens(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test: skipped with -short")
	}
	t.Parallel()
	chromiumPath(t)
	c := newCluster(t, "")
	b := newBrowser(t, c.URL)
	b.signIn(c.Token)

	b.open("/users")
	b.wait("the Users page", `document.querySelector('#users tr[data-user="admin"]') !== null`)
	b.do("add dave", setValue("#user-name", "dave"), chromedp.Click(chromedp.CSS("#user-add")))
	b.wait("dave's token", `!document.querySelector("#user-token").hidden && document.querySelector('#users tr[data-user="dave"]') !== null`)
	if tok := b.text("#user-token-value"); !strings.HasPrefix(tok, "dstu_") {
		t.Errorf("the new user's token = %q", tok)
	}
	b.screenshot("users")
	eval[bool](b, `(() => { const s = document.querySelector('#users tr[data-user="dave"] select'); s.value = "admin"; s.dispatchEvent(new Event("change")); return true; })()`)
	b.wait("dave an admin", `(() => { const s = document.querySelector('#users tr[data-user="dave"] select'); return s && !s.disabled && s.value === "admin"; })()`)
	var users []api.UserInfo
	if r := c.dstack("", "users", "list", "--json"); json.Unmarshal([]byte(r.stdout), &users) != nil || len(users) != 2 || !users[1].Admin {
		t.Errorf("users after the role change: %s", r)
	}
	// A cap of running jobs and a storage quota, set from the page.
	eval[bool](b, `(() => { const i = document.querySelector('#users tr[data-user="dave"] input.max-running'); i.value = "4"; i.dispatchEvent(new Event("change")); return true; })()`)
	b.wait("dave's cap shown", `(() => { const i = document.querySelector('#users tr[data-user="dave"] input.max-running'); return i && !i.disabled && i.value === "4"; })()`)
	eval[bool](b, `(() => { const i = document.querySelector('#users tr[data-user="dave"] input.quota'); i.value = "2"; i.dispatchEvent(new Event("change")); return true; })()`)
	b.wait("dave's quota shown", `(() => { const s = document.querySelector('#users tr[data-user="dave"] .storage'); return s && s.textContent.includes("of 2"); })()`)
	users = nil
	if r := c.dstack("", "users", "list", "--json"); json.Unmarshal([]byte(r.stdout), &users) != nil || len(users) != 2 ||
		users[1].MaxRunning != 4 || users[1].StorageQuota == nil || *users[1].StorageQuota != 2<<30 {
		t.Errorf("users after setting dave's cap and quota on the page: %s", r)
	}
	eval[bool](b, `(() => { window.confirm = () => true; return true; })()`)
	b.click("remove dave", `#users tr[data-user="dave"] button.danger`)
	b.wait("dave removed", `document.querySelector('#users tr[data-user="dave"]') === null && document.querySelector('#users tr[data-user="admin"]') !== null`)

	b.open("/settings")
	b.wait("the Tokens section", `document.querySelector('#tokens-list tr[data-token="default"]') !== null`)
	b.do("create a token", setValue("#token-name", "web"), setValue("#token-expires", "30d"), chromedp.Click(chromedp.CSS("#token-create")))
	b.wait("the new token", `!document.querySelector("#token-new").hidden && document.querySelector('#tokens-list tr[data-token="web"]') !== null`)
	web := b.text("#token-new-value")
	if !strings.HasPrefix(web, "dstu_") {
		t.Fatalf("the new token = %q", web)
	}
	b.screenshot("settings-tokens")
	if r := c.dstack("", "tokens", "list"); !strings.Contains(r.stdout, "web") || strings.Contains(r.stdout, web) {
		t.Errorf("tokens list after creating one in the browser: %s", r)
	}

	// A session made with the new token ends when it is revoked.
	b.click("sign out", "#signout")
	b.wait("the login page", `location.pathname === "/login"`)
	b.signIn(web)
	if st := eval[int](b, `fetch("/api/v1/me").then((r) => r.status)`); st != 200 {
		t.Fatalf("GET /me in the new session: %d", st)
	}
	if r := c.dstack("", "tokens", "revoke", "web"); r.code != 0 {
		t.Fatalf("tokens revoke: %s", r)
	}
	if st := eval[int](b, `fetch("/api/v1/me").then((r) => r.status)`); st != 401 {
		t.Errorf("GET /me in the session of a revoked token: %d, want 401", st)
	}
	b.open("/runs")
	b.wait("the login page", fmt.Sprintf(`location.pathname === %s`, js("/login")))
}
