package server_test

import (
	"bufio"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
)

// eventStream reads GET /api/v1/events: the kinds of the events, in order.
type eventStream struct {
	resp   *http.Response
	events chan string
	ended  chan struct{}
}

func openEvents(t *testing.T, base string, header map[string]string) *eventStream {
	t.Helper()
	hr, err := http.NewRequest(http.MethodGet, base+"/api/v1/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		hr.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /events: %d", resp.StatusCode)
	}
	s := &eventStream{resp: resp, events: make(chan string, 100), ended: make(chan struct{})}
	go func() {
		defer close(s.ended)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if k, ok := strings.CutPrefix(sc.Text(), "event: "); ok && k != string(api.EventTick) {
				s.events <- k
			}
		}
	}()
	return s
}

// next is the next event's kind, failing the test when none comes.
func (s *eventStream) next(t *testing.T, what string) string {
	t.Helper()
	select {
	case k := <-s.events:
		return k
	case <-time.After(10 * time.Second):
		t.Fatalf("no event after %s", what)
		return ""
	}
}

// want reads events until one of kind, failing on any of others first.
func (s *eventStream) want(t *testing.T, what string, kind api.EventKind) {
	t.Helper()
	if k := s.next(t, what); k != string(kind) {
		t.Fatalf("after %s: event %q, want %q", what, k, kind)
	}
	// A change may name more kinds: take those that came with it.
	for {
		select {
		case <-s.events:
		case <-time.After(100 * time.Millisecond):
			return
		}
	}
}

func TestEventsTellWhatChanged(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	es := openEvents(t, e.srv.URL, map[string]string{"Authorization": "Bearer " + e.srv.AdminToken})
	if ct := es.resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type %q, want text/event-stream", ct)
	}
	run := e.submit(t, e.admin, bashJob("train"))
	es.want(t, "a run was submitted", api.EventRuns)

	rc := registerRunner(t, e.admin, "r1")
	es.want(t, "a runner registered", api.EventRunners)
	a := claim(t, rc)
	es.want(t, "a job was claimed", api.EventRuns)
	setStatus(t, rc, a, api.StatusRunning)
	es.want(t, "a job started running", api.EventRuns)

	// Another user's changes are not told.
	other := newUser(t, e.srv, "other")
	uploadCode(t, other) // a code archive is its uploader's
	e.submit(t, other, bashJob("theirs"))
	if _, err := e.admin.OnDemandSet(ctx, false, false); err != nil {
		t.Fatal(err)
	}
	es.want(t, "the on-demand switch was turned", api.EventLimits)

	if _, err := e.admin.RunStop(ctx, run.Name, true); err != nil {
		t.Fatal(err)
	}
	es.want(t, "a run was stopped", api.EventRuns)

	// The stream ends when the server stops.
	if err := e.srv.Server.Stop(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-es.ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the event stream outlived the server")
	}
}

func TestEventsWithSessionCookie(t *testing.T) {
	t.Parallel()
	e := setup(t)
	cookie, _ := signIn(t, e.srv.URL, e.srv.AdminToken)
	es := openEvents(t, e.srv.URL, map[string]string{"Cookie": cookie})
	registerRunner(t, e.admin, "r1")
	es.want(t, "a runner registered", api.EventRunners)
}
