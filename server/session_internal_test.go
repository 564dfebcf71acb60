package server

import (
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
)

func TestSessionCookieIsSecureUnderTLS(t *testing.T) {
	t.Parallel()
	now := time.Now()
	for _, tc := range []struct {
		tls      bool
		external string
		secure   bool
	}{
		{false, "", false},
		{true, "", true},
		{false, "http://dstack.example.com", false},
		{false, "https://dstack.example.com", true},
		{false, "HTTPS://dstack.example.com:8443/dstack", true},
		{true, "http://10.0.0.5:3000", true},
	} {
		s := &Server{cfg: Config{Now: func() time.Time { return now }, ExternalURL: tc.external}}
		if tc.tls {
			s.cfg.TLSCert, s.cfg.TLSKey = "cert.pem", "key.pem"
		}
		c := s.sessionCookieFor("v1.sealed", now.Add(sessionTTL))
		if c.Secure != tc.secure || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/" {
			t.Errorf("TLS %v, external URL %q: cookie %+v", tc.tls, tc.external, c)
		}
		if c.MaxAge != int(sessionTTL.Seconds()) {
			t.Errorf("TLS %v: Max-Age %d, want %d", tc.tls, c.MaxAge, int(sessionTTL.Seconds()))
		}
		if cl := s.sessionCookieFor("", now); cl.MaxAge >= 0 || cl.Value != "" || cl.Secure != tc.secure {
			t.Errorf("TLS %v, external URL %q: clearing cookie %+v", tc.tls, tc.external, cl)
		}
	}
}

func TestOriginOf(t *testing.T) {
	t.Parallel()
	for raw, want := range map[string]string{
		"https://dstack.example.com/":         "https://dstack.example.com",
		"https://DStack.Example.com:443/x/y":  "https://dstack.example.com",
		"http://dstack.example.com:80":        "http://dstack.example.com",
		"http://dstack.example.com:443":       "http://dstack.example.com:443",
		"https://dstack.example.com:8443":     "https://dstack.example.com:8443",
		"http://[2001:db8::1]:3000/":          "http://[2001:db8::1]:3000",
		"https://[2001:DB8::1]":               "https://[2001:db8::1]",
		" https://dstack.example.com ":        "https://dstack.example.com",
		"":                                    "",
		"dstack.example.com":                  "",
		"ftp://dstack.example.com":            "",
		"null":                                "",
		"https://user:pw@dstack.example.com/": "https://dstack.example.com",
	} {
		if got := originOf(raw); got != want {
			t.Errorf("originOf(%q) = %q, want %q", raw, got, want)
		}
	}
}

func TestSameOriginBehindAProxy(t *testing.T) {
	t.Parallel()
	external := originOf("https://dstack.example.com")
	for _, tc := range []struct {
		host, origin, external string
		ok                     bool
	}{
		{"dstack.example.com", "https://dstack.example.com", "", true},
		{"127.0.0.1:3000", "https://dstack.example.com", "", false},
		{"127.0.0.1:3000", "https://dstack.example.com", external, true},
		{"127.0.0.1:3000", "https://dstack.example.com:443", external, true},
		{"127.0.0.1:3000", "http://dstack.example.com", external, false},
		{"127.0.0.1:3000", "https://evil.example", external, false},
		{"127.0.0.1:3000", "null", external, false},
		{"127.0.0.1:3000", "", external, true},
	} {
		r, _ := http.NewRequest(http.MethodPost, "http://"+tc.host+"/api/v1/session", nil)
		if tc.origin != "" {
			r.Header.Set("Origin", tc.origin)
		}
		if err := checkSameOrigin(r, tc.external); (err == nil) != tc.ok {
			t.Errorf("Host %s, Origin %q, external %q: %v, want ok %v", tc.host, tc.origin, tc.external, err, tc.ok)
		}
	}
}

func TestLocalPath(t *testing.T) {
	t.Parallel()
	for next, want := range map[string]string{
		"":                         "/runs",
		"/runners":                 "/runners",
		"/runs/bold-fox-1":         "/runs/bold-fox-1",
		"https://evil.example/":    "/runs",
		"//evil.example/":          "/runs",
		"/\\evil.example":          "/runs",
		"javascript:alert(1)":      "/runs",
		"runs":                     "/runs",
		"/api/v1/session":          "/runs",
		"/login":                   "/runs",
		"/runs?token=dstu_x":       "/runs",
		"/runs\r\nLocation: evil/": "/runs",
	} {
		if got := localPath(next); got != want {
			t.Errorf("localPath(%q) = %q, want %q", next, got, want)
		}
	}
}

func TestBroadcasterCoalescesAndScopes(t *testing.T) {
	t.Parallel()
	b := newBroadcaster()
	alice, cancelA := b.subscribe("alice")
	bob, cancelB := b.subscribe("bob")
	defer cancelB()
	b.publish("alice", api.EventRuns)
	b.publish("alice", api.EventRunners, api.EventRuns)
	b.publish("", api.EventLimits)
	select {
	case <-alice.notify:
	default:
		t.Fatal("alice was not notified")
	}
	if got, want := alice.take(), []api.EventKind{api.EventRuns, api.EventRunners, api.EventLimits}; !slices.Equal(got, want) {
		t.Errorf("alice's events = %v, want %v", got, want)
	}
	if got, want := bob.take(), []api.EventKind{api.EventLimits}; !slices.Equal(got, want) {
		t.Errorf("bob's events = %v, want %v", got, want)
	}
	cancelA()
	b.publish("alice", api.EventRuns)
	if got := alice.take(); len(got) != 0 {
		t.Errorf("a cancelled subscription got %v", got)
	}
	var nilB *broadcaster
	nilB.publish("alice", api.EventRuns) // a server without streams
}
