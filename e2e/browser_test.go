package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// The browser harness of the web UI's tests: Debian's Chromium, headless,
// driven with chromedp. scripts/chromium.sh installs it (`make test` runs
// it); CHROMIUM names another binary.

// uiTimeout bounds one wait in the browser: a page to show what a test
// waits for.
const uiTimeout = 20 * time.Second

// screenshotDir is where the tests save a screenshot of each page: build/
// at the repository's root, which `make clean` removes.
var screenshotDir = filepath.Join("..", "build", "screenshots")

// chromiumPath is the Chromium to drive; a test without one fails, saying
// how to install it.
func chromiumPath(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("CHROMIUM")
	if bin == "" {
		bin = "/usr/bin/chromium"
	}
	if _, err := os.Stat(bin); err != nil {
		if testing.Short() {
			t.Skipf("no Chromium at %s: skipped with -short", bin)
		}
		t.Fatalf("no Chromium at %s (%v): run scripts/chromium.sh to install it, or set CHROMIUM to a Chromium or Chrome binary", bin, err)
	}
	return bin
}

// browser is one headless Chromium with one tab, on the server at base.
type browser struct {
	t    *testing.T
	ctx  context.Context
	base string

	mu     sync.Mutex
	errors []string // uncaught exceptions of the pages
}

// newBrowser starts Chromium for the test; it is stopped when the test
// ends, and any exception a page threw fails the test.
func newBrowser(t *testing.T, base string) *browser {
	t.Helper()
	bin := chromiumPath(t)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(bin),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1366, 900),
		chromedp.UserDataDir(t.TempDir()),
	)
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	b := &browser{t: t, ctx: ctx, base: base}
	t.Cleanup(func() {
		_ = chromedp.Cancel(ctx)
		cancel()
		cancelAlloc()
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, e := range b.errors {
			t.Errorf("a page threw: %s", e)
		}
	})
	// The first action starts the browser, on the context that lives as
	// long as the test.
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start Chromium %s: %v", bin, err)
	}
	if err := chromedp.Listen(ctx, func(ev any) {
		if ex, ok := ev.(*runtime.EventExceptionThrown); ok {
			msg := ex.ExceptionDetails.Text
			if e := ex.ExceptionDetails.Exception; e != nil && e.Description != "" {
				msg += ": " + e.Description
			}
			b.mu.Lock()
			b.errors = append(b.errors, msg)
			b.mu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}
	return b
}

// do runs actions, failing the test on an error.
func (b *browser) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, uiTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.t.Fatalf("%s: %v\npage:\n%s", what, err, b.pageText())
	}
}

// click clicks the element sel selects. Pages redraw what changed as
// events arrive, so an element found may be replaced before the click
// lands: the click is tried again on the element that replaced it.
func (b *browser) click(what, sel string) {
	b.t.Helper()
	var err error
	for range 5 {
		ctx, cancel := context.WithTimeout(b.ctx, uiTimeout)
		err = chromedp.Do(ctx, chromedp.Click(chromedp.CSS(sel)))
		cancel()
		if err == nil || !strings.Contains(err.Error(), "Could not find node") {
			break
		}
	}
	if err != nil {
		b.t.Fatalf("%s: %v\npage:\n%s", what, err, b.pageText())
	}
}

// open navigates to path on the server and waits for the page's scripts.
func (b *browser) open(path string) {
	b.t.Helper()
	b.do("open "+path, chromedp.Navigate(b.base+path), chromedp.WaitReady(chromedp.CSS("body")))
}

// eval evaluates a JavaScript expression in the page.
func eval[T any](b *browser, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, uiTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// wait waits until the JavaScript expression cond is true in the page.
func (b *browser) wait(what, cond string) {
	b.t.Helper()
	b.waitFor(uiTimeout, what, cond)
}

func (b *browser) waitFor(timeout time.Duration, what, cond string) {
	b.t.Helper()
	// Polled from here rather than in the page, so that a navigation
	// (which ends the page's scripts) in between does no harm.
	deadline := time.Now().Add(timeout)
	var last error
	for {
		ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool]("Boolean("+cond+")"))
		cancel()
		if err == nil && ok {
			return
		}
		if err != nil {
			last = err
		}
		if time.Now().After(deadline) {
			msg := fmt.Sprintf("not within %s", timeout)
			if last != nil {
				msg += fmt.Sprintf(" (last error: %v)", last)
			}
			b.t.Fatalf("waiting for %s: %s\npage:\n%s", what, msg, b.pageText())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// text is the text of the first element sel matches, "" when none.
func (b *browser) text(sel string) string {
	b.t.Helper()
	return eval[string](b, fmt.Sprintf(`(document.querySelector(%q) || {textContent: ""}).textContent`, sel))
}

// pageText is the page's visible text, for failure messages.
func (b *browser) pageText() string {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.href + "\n" + (document.body ? document.body.innerText : "")`))
	if err != nil {
		return "(unreadable: " + err.Error() + ")"
	}
	return s
}

// screenshot saves the whole page as build/screenshots/NAME.png.
func (b *browser) screenshot(name string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, uiTimeout)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.MkdirAll(screenshotDir, 0o755); err != nil {
		b.t.Fatal(err)
	}
	path := filepath.Join(screenshotDir, name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("screenshot: %s", path)
}

// phone makes the viewport a phone's (true) or a laptop's (false).
func (b *browser) phone(on bool) {
	b.t.Helper()
	if on {
		b.do("phone viewport", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile, chromedp.EmulateScale(2)))
		return
	}
	b.do("laptop viewport", chromedp.EmulateViewport(1366, 900))
}

// signIn signs in on the login page with token and waits for the Runs page.
func (b *browser) signIn(token string) {
	b.t.Helper()
	b.open("/login")
	b.do("sign in",
		chromedp.WaitVisible(chromedp.CSS("#token")),
		chromedp.SetValue(chromedp.CSS("#token"), token),
		chromedp.Click(chromedp.CSS(`#login-form button[type="submit"]`)))
	b.wait("the Runs page", `location.pathname === "/runs" && document.querySelector("#runs") !== null`)
}

// setValue sets the value of the input sel selects, "" included (which
// chromedp.SetValue refuses).
func setValue(sel, v string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := chromedp.Evaluate[bool](fmt.Sprintf(`(document.querySelector(%s).value = %s, true)`, js(sel), js(v)))(ctx, t)
		return err
	})
}

// js quotes s as a JavaScript string.
func js(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "\r", `\r`, "<", `\x3c`)
	return `"` + r.Replace(s) + `"`
}
