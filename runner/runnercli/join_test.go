package runnercli

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/internal/testutil"
)

// joinServer answers POST /runners/join for joinToken (once, as a real
// server would), then heartbeats and claims with the credential it gave.
func joinServer(t *testing.T, joinToken string) (*httptest.Server, func() []api.RunnerJoinRequest) {
	t.Helper()
	var (
		mu    sync.Mutex
		joins []api.RunnerJoinRequest
	)
	refuse := func(w http.ResponseWriter, msg string) {
		w.WriteHeader(http.StatusUnauthorized)
		_ = json.NewEncoder(w).Encode(api.ErrorBody{Error: &api.Error{Code: api.CodeUnauthenticated, Message: msg}})
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/runners/join", func(w http.ResponseWriter, r *http.Request) {
		var req api.RunnerJoinRequest
		_ = json.NewDecoder(r.Body).Decode(&req)
		mu.Lock()
		joins = append(joins, req)
		first := len(joins) == 1
		mu.Unlock()
		if r.Header.Get("Authorization") != "" {
			refuse(w, "a join carries no Authorization header")
			return
		}
		if req.JoinToken != joinToken || !first {
			refuse(w, "unknown or used join token")
			return
		}
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(api.RunnerRegisterResponse{RunnerID: "r1", Token: "rt", ExpiresAt: time.Now().Add(time.Hour), HeartbeatInterval: api.Duration(time.Second)})
	})
	authed := func(h http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") != "Bearer rt" {
				refuse(w, "bad runner credential")
				return
			}
			h(w, r)
		}
	}
	mux.HandleFunc("POST /api/v1/runner/heartbeat", authed(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	mux.HandleFunc("POST /api/v1/runner/claim", authed(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(time.Second):
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv, func() []api.RunnerJoinRequest {
		mu.Lock()
		defer mu.Unlock()
		return append([]api.RunnerJoinRequest(nil), joins...)
	}
}

func TestStartJoinsWithoutConfigFile(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		env  map[string]string
	}{
		{"flag", []string{"--join-token", "jt-1"}, nil},
		{"environment", nil, map[string]string{"DSTACK_JOIN_TOKEN": "jt-1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv, joins := joinServer(t, "jt-1")
			f := setup(t) // no config file is written
			for k, v := range tt.env {
				f.env[k] = v
			}
			ctx, cancel := context.WithCancel(context.Background())
			var stdout, stderr syncBuffer
			done := make(chan int, 1)
			args := append([]string{"start", "--data-dir", f.dir, "--server", srv.URL, "--name", "od-1"}, tt.args...)
			go func() { done <- f.runTo(ctx, &stdout, &stderr, args...) }()
			stop := sync.OnceValue(func() int { cancel(); return <-done })
			defer stop()
			testutil.EventuallyErr(t, "the runner to join", func() error {
				if !strings.Contains(stdout.String(), "waiting for jobs") {
					return fmt.Errorf("stderr:\n%s", stderr.String())
				}
				return nil
			})
			if code := stop(); code != 0 {
				t.Fatalf("exit code %d: %s", code, stderr.String())
			}
			got := joins()
			if len(got) != 1 {
				t.Fatalf("%d joins, want 1", len(got))
			}
			j := got[0]
			if j.Name != "od-1" || j.Hostname == "" || j.Executor == "" || j.Version == "" || j.Resources.CPUs < 1 || j.Resources.MemoryMiB < 1 {
				t.Errorf("join request %+v", j)
			}
		})
	}
}

func TestStartRefusedJoinToken(t *testing.T) {
	t.Parallel()
	srv, _ := joinServer(t, "jt-1")
	f := setup(t)
	code, _, stderr := f.run(context.Background(), "start", "--data-dir", f.dir, "--server", srv.URL, "--join-token", "wrong")
	if code != ExitError || !strings.Contains(stderr, "refused the join token") {
		t.Errorf("exit code %d, stderr %q", code, stderr)
	}
}

func TestStartTokenAndJoinToken(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.run(context.Background(), "config", "--token", "T")
	code, _, stderr := f.run(context.Background(), "start", "--data-dir", f.dir, "--join-token", "jt")
	if code == 0 || !strings.Contains(stderr, "remove one") {
		t.Errorf("exit code %d, stderr %q", code, stderr)
	}
}
