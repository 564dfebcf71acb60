package server

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/internal/testutil"
	"github.com/dstackai/dstack/store"
)

// TestHeartbeatsAreWrittenInBatchesAndReaped: a heartbeat of a runner
// online is held in memory and written with the others; the reaper writes
// them before it looks for silent runners, so that a runner heard only in
// memory stays online while a silent one goes offline; a runner found
// offline that heartbeats is written, and online, at once.
func TestHeartbeatsAreWrittenInBatchesAndReaped(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	clock := testutil.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	s, err := New(ctx, Config{DataDir: t.TempDir(), Now: clock.Now, HeartbeatTimeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Stop() })
	h := s.routes()
	users, err := s.store.UserList(ctx)
	if err != nil || len(users) == 0 {
		t.Fatalf("list users: %v", err)
	}
	registered := clock.Now()
	tokens := map[string]string{}
	for _, name := range []string{"alive", "silent"} {
		tok := newToken(runnerTokenPrefix)
		tokens[name] = tok
		if _, err := s.store.RunnerCreate(ctx, store.RunnerCreateParams{
			ID: name, UserID: users[0].ID, Name: name, Executor: "shell", Resources: api.HostResources{CPUs: 1, MemoryMiB: 1024},
			TokenHash: hashToken(tok), TokenExpiresAt: registered.Add(24 * time.Hour), Now: registered,
		}); err != nil {
			t.Fatal(err)
		}
	}
	beat := func(name string) {
		t.Helper()
		r := httptest.NewRequestWithContext(ctx, http.MethodPost, api.PathPrefix+"/runner/heartbeat", strings.NewReader("{}"))
		r.Header.Set("Authorization", "Bearer "+tokens[name])
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		if rec.Code != http.StatusNoContent {
			t.Fatalf("heartbeat of %s: %d %s", name, rec.Code, rec.Body)
		}
	}
	get := func(id string) *store.Runner {
		t.Helper()
		r, err := s.store.RunnerGet(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}

	clock.Advance(25 * time.Second)
	beat("alive")
	if got := get("alive").LastHeartbeat; !got.Equal(registered) {
		t.Fatalf("a heartbeat was written at once (last heartbeat %s): it should wait for the batch", got)
	}
	clock.Advance(25 * time.Second) // alive heard 25s ago, in memory only; silent for 50s
	var pruned time.Time
	s.reap(ctx, &pruned)
	if r := get("alive"); !r.Online || !r.LastHeartbeat.Equal(registered.Add(25*time.Second)) {
		t.Fatalf("runner heard in memory: online %v, last heartbeat %s; want online, heard at 25s", r.Online, r.LastHeartbeat)
	}
	if get("silent").Online {
		t.Fatal("the silent runner is still online")
	}
	beat("silent")
	if !get("silent").Online {
		t.Fatal("a runner back is not online right after its heartbeat")
	}
}

// TestRestartedServerWaitsForRunnersToBeat: a server that was down longer
// than the heartbeat timeout does not take its runners for silent before
// they could reach it again: the jobs they run are not requeued. A runner
// that stays silent for the timeout after the restart is offline.
func TestRestartedServerWaitsForRunnersToBeat(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dir := t.TempDir()
	clock := testutil.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	cfg := Config{DataDir: dir, Now: clock.Now, HeartbeatTimeout: 30 * time.Second}
	s, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	users, err := s.store.UserList(ctx)
	if err != nil || len(users) == 0 {
		t.Fatalf("list users: %v", err)
	}
	free := api.HostResources{CPUs: 1, MemoryMiB: 1024}
	if _, err := s.store.RunnerCreate(ctx, store.RunnerCreateParams{
		ID: "busy", UserID: users[0].ID, Name: "busy", Executor: "shell", Resources: free,
		TokenHash: hashToken(newToken(runnerTokenPrefix)), TokenExpiresAt: clock.Now().Add(24 * time.Hour), Now: clock.Now(),
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.store.RunCreate(ctx, store.RunCreateParams{ID: "run", Name: "run", UserID: users[0].ID, Workflow: "w", CodeID: "code", Now: clock.Now(),
		Jobs: []store.JobCreate{{ID: "job", Spec: api.JobSpec{Workflow: "w", Provider: "bash", Commands: []string{"sleep 1d"}}}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.store.JobClaimNext(ctx, store.JobClaimNextParams{RunnerID: "busy", UserID: users[0].ID, Free: free, Now: clock.Now()}); err != nil {
		t.Fatalf("claim: %v", err)
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}

	clock.Advance(5 * time.Minute) // the server is down
	s, err = New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Stop() })
	clock.Advance(10 * time.Second) // the runner's next beat is yet to come
	var pruned time.Time
	s.reap(ctx, &pruned)
	if r, err := s.store.RunnerGet(ctx, "busy"); err != nil || !r.Online {
		t.Fatalf("runner 10s after the restart: %+v, %v; want online", r, err)
	}
	if j, err := s.store.JobGet(ctx, "job"); err != nil || j.Status != api.StatusDownloading || j.RunnerID != "busy" {
		t.Fatalf("job 10s after the restart: %+v, %v; want still the runner's", j, err)
	}

	clock.Advance(25 * time.Second) // silent for 35s since the restart
	s.reap(ctx, &pruned)
	if r, err := s.store.RunnerGet(ctx, "busy"); err != nil || r.Online {
		t.Fatalf("runner silent since the restart: %+v, %v; want offline", r, err)
	}
}
