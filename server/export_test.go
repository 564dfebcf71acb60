package server

import (
	"context"
	"net/http"
	"testing"

	"github.com/dstackai/dstack/store"
)

// Route is a route the server registers, for the tests of package
// server_test: its method, its path pattern and the credential it takes
// ("userToken", "runnerToken", or "" for none).
type Route struct{ Method, Path, Auth string }

func (r Route) String() string { return r.Method + " " + r.Path }

// Routes lists the routes the server registers, read from its source as the
// OpenAPI tests read them, so that a new route is covered without a list to
// keep up to date.
func Routes(t *testing.T) []Route {
	t.Helper()
	var out []Route
	for _, r := range servedRoutes(t) {
		out = append(out, Route{Method: r.method, Path: r.path, Auth: r.auth})
	}
	return out
}

// SetStatfs replaces how the server measures the file systems it writes
// to, for tests that fake a full or nearly full disk: f answers the free
// and total bytes of a directory.
func SetStatfs(s *Server, f func(dir string) (free, total uint64, err error)) {
	s.storage.mu.Lock()
	defer s.storage.mu.Unlock()
	s.storage.statfs = func(dir string) (fsSpace, error) {
		free, total, err := f(dir)
		return fsSpace{Free: free, Total: total}, err
	}
}

// Handler is the server's HTTP handler (routes and metrics), for tests that
// serve a request with a context of their own, such as one already ended.
func (s *Server) Handler() http.Handler { return s.handler }

// RouteRoles is the server's route table: each route's pattern with the
// role it was registered with (roles.go).
func RouteRoles(s *Server) map[string]string {
	out := map[string]string{}
	for _, r := range s.routeTable {
		out[r.Pattern] = string(r.Role)
	}
	return out
}

// RetentionPass runs one pass of the retention loop now.
func RetentionPass(s *Server) { s.retentionPass(context.Background()) }

// SetUserMaxRunning caps a user's running jobs, as `dstack users set
// --max-running` will.
func SetUserMaxRunning(s *Server, u *store.User, n int) (*store.User, error) {
	return s.setUserMaxRunning(context.Background(), u, n)
}

// QueueWatchers is how many keys of the queue have waiters now: a test
// waits for a runner's long-poll to be waiting before it queues work.
func QueueWatchers(s *Server) int {
	s.queue.mu.Lock()
	defer s.queue.mu.Unlock()
	return len(s.queue.subs)
}

// StopBus stops the server's bus: the replica neither hears the others nor
// tells them anything any more, as before there was one (for a benchmark's
// baseline).
func StopBus(s *Server) {
	if s.relay.bus != nil {
		s.relay.bus.Stop()
	}
}

// ReplicaID is the server's replica identity.
func ReplicaID(s *Server) string { return s.replicaID }

// ClaimWaiters counts the runners' claims waiting for a job.
func ClaimWaiters(s *Server) int {
	s.queue.mu.Lock()
	defer s.queue.mu.Unlock()
	n := 0
	for _, l := range s.queue.waiting {
		n += l.n
	}
	return n
}
