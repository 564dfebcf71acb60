package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/dstackai/dstack/store"
	"github.com/dstackai/dstack/store/sqlite"
)

// TestUIAudit: the admin's menu has the Audit page, which shows a refused
// sign-in, the sign-in and a change made with the CLI, each with who and
// from where; a member has no such link, and the page answers that only an
// admin can read the log.
func TestUIAudit(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test: skipped with -short")
	}
	t.Parallel()
	chromiumPath(t)
	c := newCluster(t, "")
	const memberToken = "dstu_e2eauditmember0000000000000000000"
	st, err := sqlite.Open(context.Background(), filepath.Join(c.dir, "server", "dstack.db"))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(memberToken))
	_, err = st.UserCreate(context.Background(), store.UserCreateParams{ID: "e2eauditmember", Name: "alice", TokenHash: hex.EncodeToString(sum[:]), Now: time.Now()})
	st.Close()
	if err != nil {
		t.Fatal(err)
	}

	b := newBrowser(t, c.URL)
	b.open("/login")
	b.do("sign in with a wrong token",
		chromedp.WaitVisible(chromedp.CSS("#token")),
		chromedp.SetValue(chromedp.CSS("#token"), "dstu_wrong"),
		chromedp.Click(chromedp.CSS(`#login-form button[type="submit"]`)))
	b.wait("the refusal", `!document.querySelector("#login-error").hidden`)
	b.signIn(c.Token)
	if r := c.dstack("", "on-demand", "disable", "-f"); r.code != 0 {
		t.Fatalf("%s", r)
	}

	b.click("the Audit link", `nav a[href="/audit"]`)
	row := func(action string) string { return `#audit tr[data-action="` + action + `"]` }
	b.wait("the entries", `["session.fail", "session.create", "ondemand.disable"].every((a) => document.querySelector('#audit tr[data-action="' + a + '"]'))`)
	cells := func(action string) []string {
		return eval[[]string](b, `[...document.querySelector(`+js(row(action))+`).querySelectorAll("td")].map((td) => td.textContent)`)
	}
	// Time, user, action, target, from, detail.
	if got := cells("ondemand.disable"); len(got) != 6 || got[1] != "admin" || got[3] != "on-demand runners" || got[4] != "127.0.0.1" ||
		!strings.Contains(got[5], "was_enabled=true") {
		t.Errorf("the on-demand entry shows %q", got)
	}
	if got := cells("session.fail"); len(got) != 6 || got[1] != "-" || got[4] != "127.0.0.1" || !strings.Contains(got[5], "refused") {
		t.Errorf("the refused sign-in shows %q", got)
	}
	if got := cells("session.create"); len(got) != 6 || got[1] != "admin" || got[2] != "session.create" {
		t.Errorf("the sign-in shows %q", got)
	}
	if first := eval[string](b, `document.querySelector("#audit tbody tr").dataset.action`); first != "ondemand.disable" {
		t.Errorf("the newest entry shown first is %q, want ondemand.disable", first)
	}
	b.screenshot("audit")

	// A member: no link, and the page says why it shows nothing.
	b.do("sign out", chromedp.Click(chromedp.CSS("#signout")))
	b.wait("the login page", `location.pathname === "/login"`)
	b.signIn(memberToken)
	if eval[bool](b, `document.querySelector('nav a[href="/audit"]') !== null`) {
		t.Error("a member's menu links the Audit page")
	}
	b.open("/audit")
	b.wait("the refusal", `document.body.textContent.includes("only an admin can read the audit log: ask an admin of this server")`)
	if eval[bool](b, `document.querySelector("#audit tbody tr") !== null`) {
		t.Error("a member's Audit page shows entries")
	}
}
