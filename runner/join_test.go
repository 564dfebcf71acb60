package runner

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
)

// TestJoinedRunnerStopsWhenRefused: an on-demand runner joins once, and
// when the server later refuses its credential it stops rather than trying
// to register again with its spent join token.
func TestJoinedRunnerStopsWhenRefused(t *testing.T) {
	t.Parallel()
	var joins, registers atomic.Int32
	unauthenticated := func(w http.ResponseWriter) {
		w.WriteHeader(http.StatusUnauthorized)
		_ = json.NewEncoder(w).Encode(api.ErrorBody{Error: &api.Error{Code: api.CodeUnauthenticated, Message: "runner credential revoked"}})
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/runners/join", func(w http.ResponseWriter, r *http.Request) {
		var req api.RunnerJoinRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.JoinToken != "jt" || r.Header.Get("Authorization") != "" || joins.Add(1) > 1 {
			unauthenticated(w)
			return
		}
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(api.RunnerRegisterResponse{RunnerID: "r1", Token: "rt", ExpiresAt: time.Now().Add(time.Hour), HeartbeatInterval: api.Duration(time.Hour)})
	})
	mux.HandleFunc("POST /api/v1/runners/register", func(w http.ResponseWriter, r *http.Request) {
		registers.Add(1)
		unauthenticated(w)
	})
	// The instance was terminated: every runner call is refused.
	mux.HandleFunc("/api/v1/runner/", func(w http.ResponseWriter, r *http.Request) { unauthenticated(w) })
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	r, err := New(Config{
		Server: srv.URL, JoinToken: "jt", Name: "od", DataDir: t.TempDir(),
		Resources: &api.HostResources{CPUs: 1, MemoryMiB: 1024},
	}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer r.Stop()
	select {
	case <-r.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("the runner kept going after its credential was refused")
	}
	if j, reg := joins.Load(), registers.Load(); j != 1 || reg != 0 {
		t.Errorf("%d joins and %d registrations, want 1 and 0", j, reg)
	}
}
