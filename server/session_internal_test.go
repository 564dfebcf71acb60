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
	for _, tlsOn := range []bool{false, true} {
		s := &Server{cfg: Config{Now: func() time.Time { return now }}}
		if tlsOn {
			s.cfg.TLSCert, s.cfg.TLSKey = "cert.pem", "key.pem"
		}
		c := s.sessionCookieFor("v1.sealed", now.Add(sessionTTL))
		if c.Secure != tlsOn || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/" {
			t.Errorf("TLS %v: cookie %+v", tlsOn, c)
		}
		if c.MaxAge != int(sessionTTL.Seconds()) {
			t.Errorf("TLS %v: Max-Age %d, want %d", tlsOn, c.MaxAge, int(sessionTTL.Seconds()))
		}
		if cl := s.sessionCookieFor("", now); cl.MaxAge >= 0 || cl.Value != "" || cl.Secure != tlsOn {
			t.Errorf("TLS %v: clearing cookie %+v", tlsOn, cl)
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
