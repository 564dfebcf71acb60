package server_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/internal/testutil"
	"github.com/dstackai/dstack/server"
	"github.com/dstackai/dstack/server/servertest"
)

// TestRunnerRemove: `dstack runners rm NAME` removes the offline runners of
// that name and keeps the online one, saying why; the jobs they ran keep
// their runner's name; another user cannot see them.
func TestRunnerRemove(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	old := registerRunner(t, e.admin, "box")
	run := e.submit(t, e.admin, bashJob("train"))
	a := claim(t, old)
	setStatus(t, old, a, api.StatusRunning)
	setStatus(t, old, a, api.StatusDone)
	if err := old.RunnerOffline(ctx); err != nil {
		t.Fatal(err)
	}
	registerRunner(t, e.admin, "box") // the same machine, restarted
	rs, err := e.admin.RunnerList(ctx)
	if err != nil || len(rs) != 2 {
		t.Fatalf("runners = %+v, %v; want the old and the new box", rs, err)
	}
	var oldID, newID string
	for _, r := range rs {
		if r.Status == api.RunnerOffline {
			oldID = r.ID
		} else {
			newID = r.ID
		}
	}

	other := newUser(t, e.srv, "other")
	_, err = other.RunnerRemove(ctx, "box")
	wantAPIError(t, "another user's runner", err, http.StatusNotFound, api.CodeNotFound)

	out, err := e.admin.RunnerRemove(ctx, "box")
	if err != nil {
		t.Fatalf("runners rm box: %v", err)
	}
	if len(out.Removed) != 1 || out.Removed[0].ID != oldID || len(out.Kept) != 1 || out.Kept[0].ID != newID ||
		!strings.Contains(out.Kept[0].Reason, "online") {
		t.Fatalf("runners rm box = %+v; want %s removed, %s kept as online", out, oldID, newID)
	}
	if j := getJob(t, e.admin, run.Name, a.Job.ID); j.RunnerName != "box" {
		t.Errorf("the job of the removed runner shows runner %q, want box", j.RunnerName)
	}
	_, err = e.admin.RunnerRemove(ctx, "box")
	wantAPIError(t, "only an online runner left", err, http.StatusConflict, api.CodeConflict)
	if !strings.Contains(err.Error(), "is online") {
		t.Errorf("the refusal does not say why: %v", err)
	}
	_, err = e.admin.RunnerRemove(ctx, oldID)
	wantAPIError(t, "a removed runner", err, http.StatusNotFound, api.CodeNotFound)
	if rs, _ := e.admin.RunnerList(ctx); len(rs) != 1 || rs[0].ID != newID {
		t.Fatalf("runners left = %+v; want only %s", rs, newID)
	}
}

// TestOfflineRunnersPastRetentionAreRemoved: the server removes a
// self-hosted runner offline for longer than RunnerRetention by itself.
func TestOfflineRunnersPastRetentionAreRemoved(t *testing.T) {
	t.Parallel()
	clock := testutil.NewClock(time.Now())
	e := setup(t, withClock(clock), servertest.WithConfig(func(c *server.Config) {
		c.RunnerRetention = time.Hour
		c.HeartbeatTimeout = time.Second // the reaper passes every 250ms
	}))
	ctx := context.Background()
	gone := registerRunner(t, e.admin, "gone")
	if err := gone.RunnerOffline(ctx); err != nil {
		t.Fatal(err)
	}
	clock.Advance(59 * time.Minute)
	// Within retention it stays, whatever passes ran.
	if rs, _ := e.admin.RunnerList(ctx); len(rs) != 1 {
		t.Fatalf("runners = %+v; want the offline runner kept within retention", rs)
	}
	clock.Advance(2 * time.Minute)
	testutil.Eventually(t, "the offline runner to be removed", func() bool {
		rs, err := e.admin.RunnerList(ctx)
		return err == nil && len(rs) == 0
	})
}
