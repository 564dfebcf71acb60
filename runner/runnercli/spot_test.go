package runnercli

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/internal/testutil"
)

// spotServer is a dstack server that records what a runner on a reclaimed
// spot instance calls, and an instance metadata service (IMDSv2) with a
// notice.
type spotServer struct {
	srv, imds                        *httptest.Server
	claims, interruptions, offlines  atomic.Int64
	interruption                     atomic.Pointer[api.RunnerInterruptionRequest]
	metadataReads, unauthorizedReads atomic.Int64
}

func newSpotServer(t *testing.T) *spotServer {
	t.Helper()
	s := &spotServer{}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/runners/register", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(api.RunnerRegisterResponse{RunnerID: "r1", Token: "rt", ExpiresAt: time.Now().Add(time.Hour), HeartbeatInterval: api.Duration(time.Second)})
	})
	mux.HandleFunc("POST /api/v1/runner/heartbeat", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	mux.HandleFunc("POST /api/v1/runner/claim", func(w http.ResponseWriter, r *http.Request) {
		s.claims.Add(1)
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /api/v1/runner/interruption", func(w http.ResponseWriter, r *http.Request) {
		var req api.RunnerInterruptionRequest
		_ = json.NewDecoder(r.Body).Decode(&req)
		s.interruption.Store(&req)
		s.interruptions.Add(1)
		_ = json.NewEncoder(w).Encode(api.RunnerInterruptionResponse{InterruptedAt: time.Now(), Reason: "reclaimed"})
	})
	mux.HandleFunc("POST /api/v1/runner/offline", func(w http.ResponseWriter, r *http.Request) {
		s.offlines.Add(1)
		w.WriteHeader(http.StatusNoContent)
	})
	s.srv = httptest.NewServer(mux)
	t.Cleanup(s.srv.Close)

	md := http.NewServeMux()
	md.HandleFunc("PUT /latest/api/token", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Aws-Ec2-Metadata-Token-Ttl-Seconds", "21600")
		_, _ = w.Write([]byte("tok"))
	})
	md.HandleFunc("GET /latest/meta-data/spot/instance-action", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Aws-Ec2-Metadata-Token") != "tok" {
			s.unauthorizedReads.Add(1)
			http.Error(w, "token required", http.StatusUnauthorized)
			return
		}
		s.metadataReads.Add(1)
		_, _ = w.Write([]byte(`{"action": "terminate", "time": "2030-01-02T10:44:07Z"}`))
	})
	s.imds = httptest.NewServer(md)
	t.Cleanup(s.imds.Close)
	return s
}

// TestStartWatchesSpotInterruption: the flag or the environment turns the
// watch on; a runner started on an instance being reclaimed reports it,
// claims nothing, goes offline and waits until stopped.
func TestStartWatchesSpotInterruption(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
	}{
		{"flags", []string{"--watch-spot-interruption", "--imds-endpoint", "IMDS"}, nil},
		{"environment", nil, map[string]string{"DSTACK_WATCH_SPOT_INTERRUPTION": "1", "DSTACK_IMDS_ENDPOINT": "IMDS"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newSpotServer(t)
			f := setup(t)
			if code, _, stderr := f.run(context.Background(), "config", "--token", "user-token", "--server", s.srv.URL); code != 0 {
				t.Fatal(stderr)
			}
			for k, v := range tc.env {
				f.env[k] = strings.ReplaceAll(v, "IMDS", s.imds.URL)
			}
			args := []string{"start", "--data-dir", f.dir}
			for _, a := range tc.args {
				args = append(args, strings.ReplaceAll(a, "IMDS", s.imds.URL))
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var stdout, stderr syncBuffer
			done := make(chan int, 1)
			go func() { done <- f.runTo(ctx, &stdout, &stderr, args...) }()
			testutil.EventuallyErr(t, "the runner to go offline", func() error {
				if s.offlines.Load() == 0 {
					return fmt.Errorf("stderr:\n%s", stderr.String())
				}
				return nil
			})
			if n := s.claims.Load(); n != 0 {
				t.Errorf("%d claims from a runner on an instance being reclaimed", n)
			}
			if got := s.interruption.Load(); got == nil || got.Action != "terminate" || !got.Time.Equal(time.Date(2030, 1, 2, 10, 44, 7, 0, time.UTC)) {
				t.Errorf("interruption reported = %+v", got)
			}
			if s.unauthorizedReads.Load() != 0 || s.metadataReads.Load() == 0 {
				t.Errorf("metadata read %d times with the IMDSv2 token, %d without", s.metadataReads.Load(), s.unauthorizedReads.Load())
			}
			select {
			case code := <-done:
				t.Fatalf("the runner exited (%d) instead of waiting for the instance to go; stderr:\n%s", code, stderr.String())
			default:
			}
			cancel()
			if code := <-done; code != 0 {
				t.Fatalf("exit code %d once stopped: %s", code, stderr.String())
			}
		})
	}
}

func TestStartSpotFlagErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr string
	}{
		{"bad endpoint", []string{"--watch-spot-interruption", "--imds-endpoint", "169.254.169.254"}, nil, "--imds-endpoint"},
		{"bad environment value", nil, map[string]string{"DSTACK_WATCH_SPOT_INTERRUPTION": "maybe"}, "DSTACK_WATCH_SPOT_INTERRUPTION"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := setup(t)
			f.run(context.Background(), "config", "--token", "T")
			for k, v := range tc.env {
				f.env[k] = v
			}
			code, _, stderr := f.run(context.Background(), append([]string{"start", "--data-dir", f.dir}, tc.args...)...)
			if code == 0 || !strings.Contains(stderr, tc.wantErr) {
				t.Errorf("exit code %d, stderr %q; want an error mentioning %q", code, stderr, tc.wantErr)
			}
		})
	}
}
