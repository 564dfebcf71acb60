package server

import (
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/store"
)

// Live updates: GET /api/v1/events is a stream of server-sent events that
// name what changed (api.EventRuns, api.EventRunners...), never the data
// itself; a client refetches what it shows through the ordinary endpoints.
//
// Changes made through this server (a run submitted, a job's status, a
// runner registering or going offline, a limit set, the autoscaler
// requeueing jobs) are published at once, to the streams of the user they
// concern, on this replica and, through relay (bus.go), on the others that
// share the database. Those the loops make in the background without
// publishing, and any a replica missed, are caught up by the api.EventTick
// sent every eventTick: a client refetches on it too.

// Stream timings: eventTick makes clients refetch anyway; eventPing keeps
// proxies from closing an idle stream.
const (
	eventTick  = 10 * time.Second
	eventPing  = 25 * time.Second
	eventRetry = 3 * time.Second // how soon a browser reconnects
)

// broadcaster hands the kinds of change published to the streams
// subscribed. A subscriber is never blocked on: kinds published while it
// writes are coalesced into one pending set.
type broadcaster struct {
	mu   sync.Mutex
	subs map[*subscriber]struct{}
	// relay, when set, passes every publish on to the other replicas.
	relay func(userID string, kinds []api.EventKind)
}

// subscriber is one open stream of one user.
type subscriber struct {
	userID  string
	mu      sync.Mutex
	pending []api.EventKind
	notify  chan struct{} // holds one token while pending is not empty
}

func newBroadcaster() *broadcaster {
	return &broadcaster{subs: map[*subscriber]struct{}{}}
}

// subscribe opens a subscription to the changes of userID's state; cancel
// it when the stream ends.
func (b *broadcaster) subscribe(userID string) (sub *subscriber, cancel func()) {
	sub = &subscriber{userID: userID, notify: make(chan struct{}, 1)}
	b.mu.Lock()
	b.subs[sub] = struct{}{}
	b.mu.Unlock()
	return sub, func() {
		b.mu.Lock()
		delete(b.subs, sub)
		b.mu.Unlock()
	}
}

// publish tells the streams of userID that kinds of its state changed; an
// empty userID tells every stream.
func (b *broadcaster) publish(userID string, kinds ...api.EventKind) {
	if b == nil || len(kinds) == 0 {
		return
	}
	if b.relay != nil {
		b.relay(userID, kinds)
	}
	b.publishHere(userID, kinds...)
}

// publishHere is publish to the streams of this replica only: for what
// another replica published.
func (b *broadcaster) publishHere(userID string, kinds ...api.EventKind) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for sub := range b.subs {
		if userID == "" || sub.userID == userID {
			sub.add(kinds)
		}
	}
}

func (s *subscriber) add(kinds []api.EventKind) {
	s.mu.Lock()
	for _, k := range kinds {
		if !slices.Contains(s.pending, k) {
			s.pending = append(s.pending, k)
		}
	}
	s.mu.Unlock()
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// take returns the kinds pending and clears them.
func (s *subscriber) take() []api.EventKind {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.pending
	s.pending = nil
	return out
}

// publishJobs tells the users of jobs that their runs and runners changed.
func (s *Server) publishJobs(jobs []*store.Job, kinds ...api.EventKind) {
	seen := map[string]bool{}
	for _, j := range jobs {
		if !seen[j.UserID] {
			seen[j.UserID] = true
			s.events.publish(j.UserID, kinds...)
		}
	}
}

// handleEvents streams the caller's changes until the client goes away or
// the server stops.
func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request, u *store.User) error {
	sub, cancel := s.events.subscribe(u.ID)
	defer cancel()
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	send := func(format string, args ...any) bool {
		if _, err := fmt.Fprintf(w, format, args...); err != nil { //nolint:gosec // text/event-stream of JSON, not HTML
			return false
		}
		return rc.Flush() == nil
	}
	if !send("retry: %d\n: connected\n\n", eventRetry.Milliseconds()) {
		return nil
	}
	tick := time.NewTicker(eventTick)
	defer tick.Stop()
	ping := time.NewTicker(eventPing)
	defer ping.Stop()
	ctx := r.Context()
	for {
		var ok bool
		select {
		case <-ctx.Done():
			return nil
		case <-sub.notify:
			ok = true
			for _, k := range sub.take() {
				ok = ok && send("event: %s\ndata: {}\n\n", k)
			}
		case <-tick.C:
			ok = send("event: %s\ndata: {}\n\n", api.EventTick)
		case <-ping.C:
			ok = send(": ping\n\n")
		}
		if !ok {
			return nil
		}
	}
}
