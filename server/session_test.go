package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/internal/testutil"
	"github.com/dstackai/dstack/server"
	"github.com/dstackai/dstack/server/servertest"
)

// signIn signs in with token through POST /api/v1/session and returns the
// Cookie header that carries the session, and its CSRF token.
func signIn(t *testing.T, base, token string) (cookie, csrf string) {
	t.Helper()
	rp := do(t, base, req{method: http.MethodPost, path: "/api/v1/session", body: `{"token":"` + token + `"}`,
		header: map[string]string{"Content-Type": "application/json"}})
	if rp.status != http.StatusOK {
		t.Fatalf("sign in: %d %s", rp.status, rp.body)
	}
	c := sessionCookieOf(t, rp)
	var sess api.Session
	if err := json.Unmarshal(rp.body, &sess); err != nil || sess.CSRFToken == "" {
		t.Fatalf("sign in: body %s is not a session (%v)", rp.body, err)
	}
	return c.Name + "=" + c.Value, sess.CSRFToken
}

// sessionCookieOf is the dstack_session cookie a reply sets.
func sessionCookieOf(t *testing.T, rp reply) *http.Cookie {
	t.Helper()
	for _, line := range rp.header.Values("Set-Cookie") {
		c, err := http.ParseSetCookie(line)
		if err != nil {
			t.Fatalf("Set-Cookie %q: %v", line, err)
		}
		if c.Name == "dstack_session" {
			return c
		}
	}
	t.Fatalf("no dstack_session cookie set; headers %v", rp.header)
	return nil
}

func jsonHeader(extra map[string]string) map[string]string {
	h := map[string]string{"Content-Type": "application/json"}
	for k, v := range extra {
		h[k] = v
	}
	return h
}

func TestSessionCookieAttributes(t *testing.T) {
	t.Parallel()
	e := setup(t)
	rp := do(t, e.srv.URL, req{method: http.MethodPost, path: "/api/v1/session", body: `{"token":"` + e.srv.AdminToken + `"}`,
		header: jsonHeader(nil)})
	if rp.status != http.StatusOK {
		t.Fatalf("sign in: %d %s", rp.status, rp.body)
	}
	c := sessionCookieOf(t, rp)
	if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/" || c.Secure {
		t.Errorf("cookie %+v: want HttpOnly, SameSite=Strict, Path=/, not Secure without TLS", c)
	}
	if c.MaxAge < int((11*time.Hour).Seconds()) || c.MaxAge > int((12*time.Hour).Seconds()) {
		t.Errorf("cookie Max-Age %d, want about 12 hours", c.MaxAge)
	}
	if strings.Contains(c.Value, e.srv.AdminToken) || strings.Contains(c.Value, strings.TrimPrefix(e.srv.AdminToken, "dstu_")) {
		t.Error("the cookie holds the token in plain text")
	}
	if cc := rp.header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control %q, want no-store", cc)
	}
	var sess api.Session
	if err := json.Unmarshal(rp.body, &sess); err != nil {
		t.Fatal(err)
	}
	if sess.User.Name != "admin" || !sess.User.Admin || len(sess.CSRFToken) < 32 || time.Until(sess.ExpiresAt) < 11*time.Hour {
		t.Errorf("session = %+v; want admin, a CSRF token, 12 hours", sess)
	}
	if strings.Contains(string(rp.body), e.srv.AdminToken) {
		t.Error("the answer repeats the token")
	}
	// The cookie stands for the token.
	me := do(t, e.srv.URL, req{method: http.MethodGet, path: "/api/v1/me", header: map[string]string{"Cookie": c.Name + "=" + c.Value}})
	if me.status != http.StatusOK || !strings.Contains(string(me.body), `"name":"admin"`) {
		t.Errorf("GET /me with the cookie: %d %s", me.status, me.body)
	}
}

func TestSessionSignInRefusals(t *testing.T) {
	t.Parallel()
	e := setup(t)
	runnerToken := registerRunnerToken(t, e.admin, "r1")
	for _, tc := range []struct {
		name   string
		body   string
		header map[string]string
		status int
		code   string
		want   string
	}{
		{"unknown token", `{"token":"dstu_nope"}`, jsonHeader(nil), http.StatusUnauthorized, api.CodeUnauthenticated, "refused"},
		{"runner credential", `{"token":"` + runnerToken + `"}`, jsonHeader(nil), http.StatusForbidden, api.CodeForbidden, "user token"},
		{"empty token", `{"token":" "}`, jsonHeader(nil), http.StatusBadRequest, api.CodeInvalid, "token is missing"},
		{"not JSON", `{"token":"` + e.srv.AdminToken + `"}`, map[string]string{"Content-Type": "text/plain"}, http.StatusBadRequest, api.CodeInvalid, "JSON"},
		{"form", "token=" + e.srv.AdminToken, map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, http.StatusBadRequest, api.CodeInvalid, "JSON"},
		{"another site", `{"token":"` + e.srv.AdminToken + `"}`, jsonHeader(map[string]string{"Origin": "https://evil.example"}), http.StatusForbidden, api.CodeForbidden, "cross-site"},
		{"cross-site fetch", `{"token":"` + e.srv.AdminToken + `"}`, jsonHeader(map[string]string{"Sec-Fetch-Site": "cross-site"}), http.StatusForbidden, api.CodeForbidden, "cross-site"},
	} {
		rp := do(t, e.srv.URL, req{method: http.MethodPost, path: "/api/v1/session", body: tc.body, header: tc.header})
		wantError(t, tc.name, rp, tc.status, tc.code, tc.want)
		if sc := rp.header.Get("Set-Cookie"); sc != "" {
			t.Errorf("%s: a refused sign-in set a cookie: %s", tc.name, sc)
		}
	}
	// The server's own page signs in.
	rp := do(t, e.srv.URL, req{method: http.MethodPost, path: "/api/v1/session", body: `{"token":"` + e.srv.AdminToken + `"}`,
		header: jsonHeader(map[string]string{"Origin": e.srv.URL, "Sec-Fetch-Site": "same-origin"})})
	if rp.status != http.StatusOK {
		t.Errorf("sign in from the server's own origin: %d %s", rp.status, rp.body)
	}
}

func TestSessionCSRF(t *testing.T) {
	t.Parallel()
	e := setup(t)
	cookie, csrf := signIn(t, e.srv.URL, e.srv.AdminToken)
	disable := func(h map[string]string) reply {
		return do(t, e.srv.URL, req{method: http.MethodPut, path: "/api/v1/on-demand", body: `{"enabled":false}`, header: h})
	}
	for _, tc := range []struct {
		name   string
		header map[string]string
		want   string
	}{
		{"no CSRF token", map[string]string{"Cookie": cookie}, "X-CSRF-Token"},
		{"wrong CSRF token", map[string]string{"Cookie": cookie, "X-CSRF-Token": csrf + "x"}, "X-CSRF-Token"},
		{"another session's CSRF token", map[string]string{"Cookie": cookie, "X-CSRF-Token": func() string { _, c := signIn(t, e.srv.URL, e.srv.AdminToken); return c }()}, "X-CSRF-Token"},
		{"another site's Origin", map[string]string{"Cookie": cookie, "X-CSRF-Token": csrf, "Origin": "http://evil.example"}, "cross-site"},
		{"a look-alike Origin", map[string]string{"Cookie": cookie, "X-CSRF-Token": csrf, "Origin": e.srv.URL + ".evil.example"}, "cross-site"},
		{"cross-site fetch", map[string]string{"Cookie": cookie, "X-CSRF-Token": csrf, "Sec-Fetch-Site": "cross-site"}, "cross-site"},
	} {
		wantError(t, tc.name, disable(tc.header), http.StatusForbidden, api.CodeForbidden, tc.want)
	}
	st, err := e.admin.OnDemandGet(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !st.Enabled {
		t.Fatal("a refused request disabled on-demand runners")
	}
	// Reads need no CSRF token.
	if rp := do(t, e.srv.URL, req{method: http.MethodGet, path: "/api/v1/on-demand", header: map[string]string{"Cookie": cookie}}); rp.status != http.StatusOK {
		t.Errorf("GET with the cookie alone: %d %s", rp.status, rp.body)
	}
	// The token and the server's own Origin go through.
	if rp := disable(map[string]string{"Cookie": cookie, "X-CSRF-Token": csrf, "Origin": e.srv.URL}); rp.status != http.StatusOK {
		t.Errorf("PUT with the CSRF token from the server's origin: %d %s", rp.status, rp.body)
	}
	if rp := disable(map[string]string{"Cookie": cookie, "X-CSRF-Token": csrf}); rp.status != http.StatusOK {
		t.Errorf("PUT with the CSRF token and no Origin: %d %s", rp.status, rp.body)
	}
	// A bearer token needs none of it, cookie or not.
	for _, h := range []map[string]string{nil, {"Cookie": cookie, "Origin": "http://evil.example"}} {
		rp := do(t, e.srv.URL, req{method: http.MethodPut, path: "/api/v1/on-demand", body: `{"enabled":true}`, token: e.srv.AdminToken, header: h})
		if rp.status != http.StatusOK {
			t.Errorf("PUT with a bearer token (headers %v): %d %s", h, rp.status, rp.body)
		}
	}
}

func TestSessionRefusedWhenExpiredOrForged(t *testing.T) {
	t.Parallel()
	clock := testutil.NewClock(time.Now())
	e := setup(t, withClock(clock))
	cookie, _ := signIn(t, e.srv.URL, e.srv.AdminToken)
	other := servertest.Start(t) // another server, another key
	otherCookie, _ := signIn(t, other.URL, other.AdminToken)
	for _, tc := range []struct{ name, cookie, want string }{
		{"garbage", "dstack_session=v1.AAAA", "sign in again"},
		{"altered", cookie[:len(cookie)-2] + "xy", "sign in again"},
		{"another server's", otherCookie, "sign in again"},
	} {
		rp := do(t, e.srv.URL, req{method: http.MethodGet, path: "/api/v1/me", header: map[string]string{"Cookie": tc.cookie}})
		wantError(t, tc.name+" cookie", rp, http.StatusUnauthorized, api.CodeUnauthenticated, tc.want)
	}
	clock.Advance(12*time.Hour + time.Second)
	rp := do(t, e.srv.URL, req{method: http.MethodGet, path: "/api/v1/me", header: map[string]string{"Cookie": cookie}})
	wantError(t, "expired cookie", rp, http.StatusUnauthorized, api.CodeUnauthenticated, "expired", "sign in again")
	// A page with the expired session goes to the login page, and clears it.
	rp = do(t, e.srv.URL, req{method: http.MethodGet, path: "/runs", header: map[string]string{"Cookie": cookie}})
	if rp.status != http.StatusSeeOther || !strings.HasPrefix(rp.header.Get("Location"), "/login") {
		t.Errorf("GET /runs with an expired session: %d to %q, want 303 to /login", rp.status, rp.header.Get("Location"))
	}
	if c := sessionCookieOf(t, rp); c.MaxAge >= 0 {
		t.Errorf("the expired session's cookie is not cleared: %+v", c)
	}
}

func TestSignOut(t *testing.T) {
	t.Parallel()
	e := setup(t)
	cookie, csrf := signIn(t, e.srv.URL, e.srv.AdminToken)
	rp := do(t, e.srv.URL, req{method: http.MethodDelete, path: "/api/v1/session", header: map[string]string{"Cookie": cookie}})
	wantError(t, "sign out without the CSRF token", rp, http.StatusForbidden, api.CodeForbidden, "X-CSRF-Token")
	rp = do(t, e.srv.URL, req{method: http.MethodDelete, path: "/api/v1/session", header: map[string]string{"Cookie": cookie, "X-CSRF-Token": csrf}})
	if rp.status != http.StatusNoContent {
		t.Fatalf("sign out: %d %s", rp.status, rp.body)
	}
	if c := sessionCookieOf(t, rp); c.MaxAge >= 0 || c.Value != "" {
		t.Errorf("sign out does not clear the cookie: %+v", c)
	}
	// Without a session there is nothing to check.
	rp = do(t, e.srv.URL, req{method: http.MethodDelete, path: "/api/v1/session"})
	if rp.status != http.StatusNoContent {
		t.Errorf("sign out without a session: %d %s", rp.status, rp.body)
	}
}

func TestUIPagesRedirectToLogin(t *testing.T) {
	t.Parallel()
	e := setup(t)
	tok := e.srv.AdminToken
	pages := []string{"/", "/runs", "/runs/some-run-1", "/runners", "/settings", "/usage"}
	charts := []string{"/usage/charts/instances.svg", "/usage/charts/daily.svg", "/runs/some-run-1/timeline.svg"}
	for _, p := range append(slices.Clone(pages), charts...) {
		// A bearer token does not open a page, nor does a token in the
		// query, and neither ends up in the redirect.
		for _, rq := range []req{
			{method: http.MethodGet, path: p},
			{method: http.MethodGet, path: p, token: tok},
			{method: http.MethodGet, path: p + "?token=" + tok},
		} {
			rp := do(t, e.srv.URL, rq)
			loc := rp.header.Get("Location")
			if rp.status != http.StatusSeeOther || !strings.HasPrefix(loc, "/login") {
				t.Errorf("GET %s without a session: %d to %q, want 303 to /login", rq.path, rp.status, loc)
			}
			if strings.Contains(loc, tok) || strings.Contains(string(rp.body), tok) {
				t.Errorf("GET %s: the redirect %q carries the token", rq.path, loc)
			}
		}
	}
	cookie, _ := signIn(t, e.srv.URL, tok)
	withCookie := map[string]string{"Cookie": cookie}
	for _, p := range pages[1:] {
		rp := do(t, e.srv.URL, req{method: http.MethodGet, path: p, header: withCookie})
		if rp.status != http.StatusOK || !strings.HasPrefix(rp.header.Get("Content-Type"), "text/html") {
			t.Errorf("GET %s signed in: %d %s", p, rp.status, rp.header.Get("Content-Type"))
		}
		if csp := rp.header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("GET %s: Content-Security-Policy %q", p, csp)
		}
		if cc := rp.header.Get("Cache-Control"); cc != "no-store" {
			t.Errorf("GET %s: Cache-Control %q, want no-store", p, cc)
		}
		if inToken := strings.Contains(string(rp.body), tok); inToken != (p == "/settings") {
			t.Errorf("GET %s: page holds the token: %v", p, inToken)
		}
	}
	for _, tc := range []struct{ path, want string }{
		{"/", "/runs"},
		{"/login", "/runs"},
		{"/login?next=/runners", "/runners"},
		{"/login?next=https://evil.example/", "/runs"},
		{"/login?next=//evil.example/", "/runs"},
		{"/login?next=/%5Cevil.example", "/runs"},
		{"/login?next=/api/v1/me", "/runs"},
	} {
		rp := do(t, e.srv.URL, req{method: http.MethodGet, path: tc.path, header: withCookie})
		if loc := rp.header.Get("Location"); rp.status != http.StatusSeeOther || loc != tc.want {
			t.Errorf("GET %s signed in: %d to %q, want 303 to %s", tc.path, rp.status, loc, tc.want)
		}
	}
	// The settings page has the runner's config line, the login page none
	// of it.
	rp := do(t, e.srv.URL, req{method: http.MethodGet, path: "/settings", header: withCookie})
	if want := "dstack-runner config --token " + tok + " --server " + e.srv.URL; !strings.Contains(string(rp.body), want) {
		t.Errorf("the settings page does not show %q", want)
	}
	rp = do(t, e.srv.URL, req{method: http.MethodGet, path: "/login"})
	if rp.status != http.StatusOK || strings.Contains(string(rp.body), tok) || !strings.Contains(string(rp.body), `id="login-form"`) {
		t.Errorf("GET /login: %d %s", rp.status, rp.body)
	}
}

func TestUIEscapesWhatUsersTyped(t *testing.T) {
	t.Parallel()
	e := setup(t)
	cookie, _ := signIn(t, e.srv.URL, e.srv.AdminToken)
	const script = `<script>alert(1)</script>`
	rp := do(t, e.srv.URL, req{method: http.MethodGet, path: "/runs/%3Cscript%3Ealert(1)%3C%2Fscript%3E", header: map[string]string{"Cookie": cookie}})
	if rp.status != http.StatusOK {
		t.Fatalf("GET a run page: %d %s", rp.status, rp.body)
	}
	if body := string(rp.body); strings.Contains(body, script) || !strings.Contains(body, "&lt;script&gt;alert(1)&lt;/script&gt;") {
		t.Errorf("the run page does not escape the run's name:\n%s", body)
	}
	rp = do(t, e.srv.URL, req{method: http.MethodGet, path: `/login?next=/runs/%22%3E%3Cscript%3Ealert(1)%3C/script%3E`})
	if body := string(rp.body); rp.status != http.StatusOK || strings.Contains(body, `"><script>`) || strings.Contains(body, script) {
		t.Errorf("the login page does not escape next:\n%s", body)
	}
}

func TestUIStaticFiles(t *testing.T) {
	t.Parallel()
	e := setup(t)
	for _, tc := range []struct{ path, ctype string }{
		{"/ui/static/app.js", "text/javascript"},
		{"/ui/static/style.css", "text/css"},
	} {
		rp := do(t, e.srv.URL, req{method: http.MethodGet, path: tc.path})
		if rp.status != http.StatusOK || !strings.HasPrefix(rp.header.Get("Content-Type"), tc.ctype) || rp.header.Get("ETag") == "" {
			t.Errorf("GET %s: %d %q, ETag %q", tc.path, rp.status, rp.header.Get("Content-Type"), rp.header.Get("ETag"))
			continue
		}
		again := do(t, e.srv.URL, req{method: http.MethodGet, path: tc.path, header: map[string]string{"If-None-Match": rp.header.Get("ETag")}})
		if again.status != http.StatusNotModified {
			t.Errorf("GET %s with its ETag: %d, want 304", tc.path, again.status)
		}
	}
	if rp := do(t, e.srv.URL, req{method: http.MethodGet, path: "/ui/static/nope.js"}); rp.status != http.StatusNotFound {
		t.Errorf("GET a missing static file: %d", rp.status)
	}
}

// TestSessionBehindAReverseProxy: a proxy that rewrites the Host header
// (nginx's default) passes the browser's Origin, which is the server's
// external URL and not the Host the server sees: the UI signs in and
// changes things from there, and the cookie is Secure under an https
// external URL although the server itself serves plain HTTP.
func TestSessionBehindAReverseProxy(t *testing.T) {
	t.Parallel()
	e := setup(t, servertest.WithConfig(func(c *server.Config) { c.ExternalURL = "https://dstack.example.com/" }))
	const origin = "https://dstack.example.com"
	rp := do(t, e.srv.URL, req{method: http.MethodPost, path: "/api/v1/session", body: `{"token":"` + e.srv.AdminToken + `"}`,
		header: jsonHeader(map[string]string{"Origin": origin, "Sec-Fetch-Site": "same-origin"})})
	if rp.status != http.StatusOK {
		t.Fatalf("sign in through the proxy: %d %s", rp.status, rp.body)
	}
	c := sessionCookieOf(t, rp)
	if !c.Secure {
		t.Errorf("cookie %+v: want Secure under an https external URL", c)
	}
	var sess api.Session
	if err := json.Unmarshal(rp.body, &sess); err != nil {
		t.Fatal(err)
	}
	cookie := c.Name + "=" + c.Value
	disable := func(o string) reply {
		return do(t, e.srv.URL, req{method: http.MethodPut, path: "/api/v1/on-demand", body: `{"enabled":false}`,
			header: map[string]string{"Cookie": cookie, "X-CSRF-Token": sess.CSRFToken, "Origin": o}})
	}
	for _, o := range []string{"http://dstack.example.com", "https://dstack.example.com:8443", "https://dstack.example.com.evil.example",
		"https://evil.example", "null"} {
		wantError(t, "Origin "+o, disable(o), http.StatusForbidden, api.CodeForbidden, "cross-site", "--external-url")
	}
	for _, o := range []string{origin, "https://DSTACK.example.com:443", e.srv.URL} {
		if rp := disable(o); rp.status != http.StatusOK {
			t.Errorf("PUT from Origin %s: %d %s", o, rp.status, rp.body)
		}
	}
	rp = do(t, e.srv.URL, req{method: http.MethodDelete, path: "/api/v1/session",
		header: map[string]string{"Cookie": cookie, "X-CSRF-Token": sess.CSRFToken, "Origin": origin}})
	if rp.status != http.StatusNoContent || !sessionCookieOf(t, rp).Secure {
		t.Errorf("sign out through the proxy: %d %s %v", rp.status, rp.body, rp.header.Values("Set-Cookie"))
	}

	// Without an external URL only the request's own host is this server.
	plain := setup(t)
	rp = do(t, plain.srv.URL, req{method: http.MethodPost, path: "/api/v1/session", body: `{"token":"` + plain.srv.AdminToken + `"}`,
		header: jsonHeader(map[string]string{"Origin": origin})})
	wantError(t, "sign in from another origin", rp, http.StatusForbidden, api.CodeForbidden, "cross-site")
}
