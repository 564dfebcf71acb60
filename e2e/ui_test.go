package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/internal/ec2fake"
)

// The web UI's scenarios: a headless Chromium (browser_test.go) drives the
// pages of the real `dstack server` while the real CLI and runner change
// what they show. Each saves screenshots of the pages it visits under
// build/screenshots/.

// uiProject's workflow waits for a file the test creates, so that the run
// page is open before the line the test watches for is written.
func uiProject(t *testing.T, gate string) string {
	return project(t, map[string]string{".dstack/workflows.yaml": fmt.Sprintf(`workflows:
  - name: hello
    provider: bash
    commands:
      - echo "waiting for the gate"
      - while [ ! -e %s ]; do sleep 0.1; done
      - echo "hello from the web UI"
      - mkdir -p out && echo "artifact body" > out/result.txt
    artifacts: [out]
`, gate)})
}

// registerRunnerAPI registers a runner called name through the API, as a
// runner would, and returns nothing: it never heartbeats.
func registerRunnerAPI(t *testing.T, c *cluster, name string) {
	t.Helper()
	body, err := json.Marshal(api.RunnerRegisterRequest{Name: name, Hostname: "host.example", Executor: "shell",
		Resources: api.HostResources{CPUs: 1, MemoryMiB: 512}})
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, c.URL+api.PathPrefix+"/runners/register", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("register runner %q: %s", name, resp.Status)
	}
}

// noOverflow checks that the page fits the viewport's width.
func (b *browser) noOverflow(page string) {
	b.t.Helper()
	if !eval[bool](b, `document.documentElement.scrollWidth <= window.innerWidth + 1`) {
		b.t.Errorf("%s is %dpx wide, wider than the window (%dpx)", page,
			eval[int](b, `document.documentElement.scrollWidth`), eval[int](b, `window.innerWidth`))
	}
}

func TestUIBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test: skipped with -short")
	}
	t.Parallel()
	chromiumPath(t)
	// An EC2-compatible server stands in for AWS: the form's credentials
	// are checked against it, and limits against what it sells.
	ec2 := ec2fake.New(ec2fake.Options{Credentials: map[string]string{awsKeyID: awsSecret}})
	t.Cleanup(ec2.Close)
	c := newCluster(t, "", "--aws-endpoint-url", ec2.URL())
	b := newBrowser(t, c.URL)

	// Signing in: a page without a session goes to the login page, a wrong
	// token is refused there, and the token never lands in the URL or in
	// storage a script can read.
	b.open("/runners")
	b.wait("the login page", `location.pathname === "/login" && document.querySelector("#login-form") !== null`)
	b.screenshot("login")
	b.do("sign in with a wrong token",
		chromedp.SetValue(chromedp.CSS("#token"), "dstu_wrong"),
		chromedp.Click(chromedp.CSS(`#login-form button[type="submit"]`)))
	b.wait("the refusal", `!document.querySelector("#login-error").hidden`)
	if msg := b.text("#login-error"); !strings.Contains(msg, "refused") {
		t.Errorf("login error = %q, want the API's refusal", msg)
	}
	b.do("sign in", chromedp.SetValue(chromedp.CSS("#token"), c.Token), chromedp.Click(chromedp.CSS(`#login-form button[type="submit"]`)))
	b.wait("the Runners page it came from", `location.pathname === "/runners" && document.querySelector("#runners") !== null`)
	if leak := eval[bool](b, fmt.Sprintf(`[location.href, document.cookie, JSON.stringify(localStorage), JSON.stringify(sessionStorage)].some((s) => s.includes(%s))`, js(c.Token))); leak {
		t.Error("the token is in the URL, a script-readable cookie or web storage")
	}

	// Runners: a runner that starts appears without a reload; a name with
	// markup is shown as text.
	b.wait("the empty runners list", `!document.querySelector("#runners-empty").hidden`)
	eval[bool](b, `window.stay = true`)
	c.startRunner("ui-runner")
	b.wait("the runner on the Runners page", `(() => {
		const row = document.querySelector('#runners tr[data-runner="ui-runner"]');
		return row && row.querySelector('.status.online') !== null && window.stay === true;
	})()`)
	const evil = `<img src=x onerror="window.pwned=1">`
	registerRunnerAPI(t, c, evil)
	b.wait("the runner with markup in its name", fmt.Sprintf(`[...document.querySelectorAll("#runners .name")].some((e) => e.textContent === %s)`, js(evil)))
	if eval[bool](b, `window.pwned === 1 || document.querySelector("#runners img") !== null`) {
		t.Error("a runner's name was rendered as markup")
	}
	b.screenshot("runners")

	// Runs: a run submitted with the CLI appears live; its page follows
	// the job's output as it is written and offers its artifacts.
	gate := filepath.Join(t.TempDir(), "gate")
	dir := uiProject(t, gate)
	b.open("/runs")
	b.wait("the Runs page", `document.querySelector("#runs tbody") !== null`)
	eval[bool](b, `window.stay = true`)
	r := c.dstack(dir, "run", "-d", "hello")
	if r.code != 0 {
		t.Fatalf("%s", r)
	}
	name := runName(t, r.stdout+r.stderr)
	row := fmt.Sprintf(`#runs tr[data-run=%s]`, js(name))
	b.wait("the run on the Runs page", fmt.Sprintf(`document.querySelector(%s) !== null && window.stay === true`, js(row)))
	b.click("open the run", row+" a")
	b.wait("the run page", fmt.Sprintf(`location.pathname === "/runs/" + %s`, js(name)))
	b.wait("the job's first line", `document.querySelector("#log").textContent.includes("waiting for the gate")`)
	if strings.Contains(b.text("#log"), "hello from the web UI") {
		t.Fatal("the job wrote its line before the gate opened")
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	b.wait("the line written after the page opened", `document.querySelector("#log").textContent.includes("hello from the web UI")`)
	b.wait("the run to be done", `document.querySelector("#run-status .status.done") !== null`)
	b.wait("the artifact", `document.querySelector('#artifacts a[download]') !== null`)
	if got := eval[string](b, `fetch(document.querySelector('#artifacts a[download]').href).then((r) => r.text())`); got != "artifact body\n" {
		t.Errorf("the artifact downloaded from the run page = %q", got)
	}
	b.screenshot("run")
	b.open("/runs")
	b.wait("the done run", fmt.Sprintf(`document.querySelector(%s + " .status.done") !== null`, js(row)))
	b.screenshot("runs")

	// Settings: the token, shown on demand, and the runner's config line.
	b.open("/settings")
	b.wait("the settings page", `document.querySelector("#token-value") !== null`)
	if !eval[bool](b, `document.querySelector("#token-value").hidden`) {
		t.Error("the token is shown before Show is pressed")
	}
	b.do("show the token", chromedp.Click(chromedp.CSS("#token-show")))
	b.wait("the token", fmt.Sprintf(`!document.querySelector("#token-value").hidden && document.querySelector("#token-value").textContent === %s`, js(c.Token)))
	if line, want := b.text("#runner-config"), "dstack-runner config --token "+c.Token+" --server "+c.URL; line != want {
		t.Errorf("runner config line = %q, want %q", line, want)
	}
	b.do("copy the line", chromedp.Click(chromedp.CSS(`button[data-copy="runner-config"]`)))
	b.wait("the copy button's answer", `document.querySelector('button[data-copy="runner-config"]').textContent === "Copied"`)

	// The AWS form: the secret field is a password field left empty; AWS's
	// refusal and the API's errors show next to the form; saved credentials
	// come back with the secret masked, and an empty secret keeps it.
	b.wait("the AWS form", `document.querySelector("#aws-status").textContent.startsWith("Not configured")`)
	if typ := eval[string](b, `document.querySelector("#aws-secret").type + ":" + document.querySelector("#aws-secret").value`); typ != "password:" {
		t.Errorf("the secret field is %q, want an empty password field", typ)
	}
	saveAWS := func(what, secret, region, bucket string) {
		t.Helper()
		eval[bool](b, `(document.querySelector("#aws-saved").hidden = true, document.querySelector("#aws-error").hidden = true)`)
		b.do(what,
			setValue("#aws-key", awsKeyID),
			setValue("#aws-secret", secret),
			setValue("#aws-region", region),
			setValue("#aws-bucket", bucket),
			chromedp.Click(chromedp.CSS("#aws-save")))
		b.wait(what+": the answer", `!document.querySelector("#aws-error").hidden || !document.querySelector("#aws-saved").hidden`)
	}
	for _, tc := range []struct{ what, secret, bucket, want string }{
		{"a wrong secret", "not-the-secret-of-this-key", "", "AWS refused access key " + awsKeyID},
		{"a bad bucket", awsSecret, "Not_A_Bucket", "not an S3 bucket name"},
	} {
		saveAWS(tc.what, tc.secret, awsRegion, tc.bucket)
		if msg := b.text("#aws-error"); !strings.Contains(msg, tc.want) {
			t.Errorf("AWS form with %s: error %q, want %q", tc.what, msg, tc.want)
		}
	}
	saveAWS("the right credentials", awsSecret, awsRegion, "")
	if msg := b.text("#aws-error"); msg != "" {
		t.Fatalf("saving the right credentials: %s", msg)
	}
	b.open("/settings")
	b.wait("the configured AWS form", `document.querySelector("#aws-status").textContent.startsWith("Configured")`)
	got := eval[string](b, `["#aws-key", "#aws-secret", "#aws-region"].map((s) => document.querySelector(s).value).join(" ") + " " + document.querySelector("#aws-secret").placeholder`)
	if !strings.HasPrefix(got, awsKeyID+"  "+awsRegion+" *") || !strings.HasSuffix(got, "*0001 (leave empty to keep)") {
		t.Errorf("the AWS form after saving shows %q, want the key, an empty secret masked in its placeholder, the region", got)
	}
	if eval[bool](b, `document.documentElement.outerHTML.includes(`+js(awsSecret)+`)`) {
		t.Error("the page holds the AWS secret")
	}
	saveAWS("another region, the secret kept", "", "us-west-2", "")
	if r := c.dstack("", "aws", "info"); r.code != 0 || !strings.Contains(r.stdout, awsKeyID) || !strings.Contains(r.stdout, "us-west-2") || strings.Contains(r.stdout+r.stderr, awsSecret) {
		t.Errorf("after the AWS form, %s", r)
	}

	// Limits on AWS: one added in the page is listed by the CLI; an
	// instance type the region does not offer is refused with the CLI's
	// words.
	b.do("add a limit", chromedp.Click(chromedp.CSS("#limit-new")),
		chromedp.SetValue(chromedp.CSS("#limit-type"), "m5.large"),
		chromedp.Click(chromedp.CSS("#limit-add")))
	b.wait("the limit in the table", `document.querySelector('#limits tr[data-instance-type="m5.large"]') !== null`)
	if r := c.dstack("", "on-demand", "limits"); r.code != 0 || !strings.Contains(r.stdout, "m5.large") {
		t.Errorf("dstack on-demand limits does not list the limit added in the page:\n%s", r)
	}
	b.do("add an unsupported limit", chromedp.Click(chromedp.CSS("#limit-new")),
		chromedp.SetValue(chromedp.CSS("#limit-type"), "local.small"),
		chromedp.Click(chromedp.CSS("#limit-add")))
	b.wait("the limit's error", `!document.querySelector("#limit-error").hidden`)
	msg := b.text("#limit-error")
	if cli := c.dstack("", "on-demand", "limit", "-i", "local.small"); cli.code == 0 || !strings.Contains(msg, "local.small") || !strings.Contains(cli.stderr, msg) {
		t.Errorf("the page says %q; the CLI:\n%s", msg, cli)
	}
	b.noOverflow("/settings")
	if eval[bool](b, `document.querySelector("#token-show").getAttribute("aria-pressed") === "true"`) {
		b.do("hide the token", chromedp.Click(chromedp.CSS("#token-show")))
	}
	b.screenshot("settings")

	// A phone: every page fits its width.
	b.phone(true)
	for _, p := range []struct{ path, name, ready string }{
		{"/runs", "runs-phone", `document.querySelector("#runs tbody tr") !== null`},
		{"/runs/" + name, "run-phone", `document.querySelector("#log").textContent.includes("hello from the web UI")`},
		{"/runners", "runners-phone", `document.querySelector("#runners tbody tr") !== null`},
		{"/settings", "settings-phone", `document.querySelector("#od-status").textContent !== ""`},
	} {
		b.open(p.path)
		b.wait(p.name, p.ready)
		b.noOverflow(p.path)
		b.screenshot(p.name)
	}
	b.phone(false)

	// Signing out ends the session.
	b.open("/runs")
	b.do("sign out", chromedp.Click(chromedp.CSS("#signout")))
	b.wait("the login page", `location.pathname === "/login"`)
	b.open("/settings")
	b.wait("the login page again", `location.pathname === "/login" && !document.body.textContent.includes(`+js(c.Token)+`)`)
}

func TestUILimits(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test: skipped with -short")
	}
	chromiumPath(t)
	c := newODCluster(t)
	b := newBrowser(t, c.URL)
	b.signIn(c.Token)
	b.open("/settings")
	b.wait("the on-demand status", `document.querySelector("#od-status").textContent.includes("Backends: local")`)

	// Add a limit; the CLI lists it.
	b.do("add a limit", chromedp.Click(chromedp.CSS("#limit-new")),
		chromedp.SetValue(chromedp.CSS("#limit-type"), "local.small"),
		chromedp.SetValue(chromedp.CSS("#limit-max"), "1"),
		chromedp.Click(chromedp.CSS("#limit-add")))
	limitRow := `#limits tr[data-instance-type="local.small"]`
	b.wait("the limit in the table", fmt.Sprintf(`document.querySelector(%s) !== null && document.querySelector("#limit-form").hidden`, js(limitRow)))
	if r := c.ok("on-demand", "limits"); !strings.Contains(r.stdout, "local.small") {
		t.Errorf("dstack on-demand limits does not list the limit added in the page:\n%s", r)
	}

	// An instance type the backend does not offer: the page shows the
	// error the CLI shows.
	b.do("add an unsupported limit", chromedp.Click(chromedp.CSS("#limit-new")),
		chromedp.SetValue(chromedp.CSS("#limit-type"), "local.huge"),
		chromedp.Click(chromedp.CSS("#limit-add")))
	b.wait("the error", `!document.querySelector("#limit-error").hidden`)
	msg := b.text("#limit-error")
	if cli := c.dstack(c.proj, "on-demand", "limit", "-i", "local.huge"); cli.code == 0 || !strings.Contains(msg, "local.huge") || !strings.Contains(cli.stderr, msg) {
		t.Errorf("the page says %q; the CLI:\n%s", msg, cli)
	}
	b.do("cancel", chromedp.Click(chromedp.CSS("#limit-cancel")))

	// Edit the maximum in place.
	b.click("edit the maximum", limitRow+" button.edit")
	b.do("set it to 2", chromedp.SetValue(chromedp.CSS(limitRow+` input[type="number"]`), "2"),
		chromedp.Click(chromedp.CSS(limitRow+" button.save")))
	b.wait("the new maximum", fmt.Sprintf(`(document.querySelector(%s) || {textContent: ""}).textContent === "2"`, js(limitRow+" .max")))
	var ls []api.Limit
	if err := json.Unmarshal([]byte(c.ok("on-demand", "limits", "--json").stdout), &ls); err != nil || len(ls) != 1 || ls[0].Max != 2 {
		t.Errorf("after the edit, the limits are %+v (%v), want local.small up to 2", ls, err)
	}
	b.noOverflow("/settings")
	b.screenshot("settings-limits")

	// The switch turns on-demand runners off and on.
	b.click("disable", "#od-enabled")
	b.wait("disabled", `document.querySelector("#od-status").textContent.startsWith("Disabled")`)
	if r := c.ok("on-demand", "status"); !strings.Contains(r.stdout, "disabled") {
		t.Errorf("after the switch, %s", r)
	}
	b.click("enable", "#od-enabled")
	b.wait("enabled", `document.querySelector("#od-status").textContent.startsWith("Enabled")`)

	// Delete, confirming.
	eval[bool](b, `(window.confirms = [], window.confirm = (m) => { window.confirms.push(m); return true; }, true)`)
	b.click("delete the limit", limitRow+" button.delete")
	b.wait("the limit gone", fmt.Sprintf(`document.querySelector(%s) === null`, js(limitRow)))
	if q := eval[string](b, `window.confirms.join("|")`); !strings.Contains(q, "Delete the limit of local.small") {
		t.Errorf("the page asked %q before deleting", q)
	}
	if r := c.ok("on-demand", "limits"); strings.Contains(r.stdout, "local.small") {
		t.Errorf("dstack on-demand limits still lists the deleted limit:\n%s", r)
	}
}
