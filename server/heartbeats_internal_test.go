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
