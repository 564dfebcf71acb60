package server_test

import (
	"context"
	"testing"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/client"
	"github.com/dstackai/dstack/server/servertest"
)

// TestRequeuedAttemptIsMarkedInTheLog: the output of a requeued job's next
// attempt follows a line the server writes when a runner claims it, naming
// the attempt, its runner and why the one before ended. A first attempt has
// none.
func TestRequeuedAttemptIsMarkedInTheLog(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// lose ends the first attempt, as its runner r1.
		lose func(t *testing.T, r1 *client.Client, a *api.Assignment)
		want string // the marker of attempt 2
	}{
		{"runner went offline", func(t *testing.T, r1 *client.Client, _ *api.Assignment) {
			if err := r1.RunnerOffline(context.Background()); err != nil {
				t.Fatal(err)
			}
		}, "--- attempt 2 of 3 on runner r2 (attempt 1: runner r1 stopped responding) ---\n"},
		{"runner gave the job back", func(t *testing.T, r1 *client.Client, a *api.Assignment) {
			u := api.JobStatusUpdate{Status: api.StatusInterrupted, Reason: "spot instance reclaimed by the cloud"}
			if _, err := r1.JobSetStatus(context.Background(), a.Job.ID, a.Lease, u); err != nil {
				t.Fatal(err)
			}
		}, "--- attempt 2 of 3 on runner r2 (attempt 1: spot instance reclaimed by the cloud) ---\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			eachLogStore(t, func(t *testing.T, logs servertest.Option) {
				e := setup(t, logs)
				ctx := context.Background()
				r1 := registerRunner(t, e.admin, "r1")
				e.submit(t, e.admin, bashJob("a"))
				// write appends as a runner does: after what the log holds.
				write := func(rc *client.Client, a *api.Assignment, s string) {
					t.Helper()
					size, err := rc.JobLogAppend(ctx, a.Job.ID, a.Lease, 0, nil)
					if err == nil {
						_, err = rc.JobLogAppend(ctx, a.Job.ID, a.Lease, size, []byte(s))
					}
					if err != nil {
						t.Fatalf("append log: %v", err)
					}
				}
				a := claim(t, r1)
				if log := jobLog(t, e.admin, a.Job.ID); log != "" {
					t.Fatalf("a first attempt's log starts with %q, want nothing", log)
				}
				setStatus(t, r1, a, api.StatusRunning)
				write(r1, a, "started\n")
				tc.lose(t, r1, a)

				r2 := registerRunner(t, e.admin, "r2")
				b := claim(t, r2)
				if b.Job.ID != a.Job.ID || b.Job.Attempt != 1 {
					t.Fatalf("r2 claimed %s attempt %d, want %s attempt 1", b.Job.ID, b.Job.Attempt, a.Job.ID)
				}
				setStatus(t, r2, b, api.StatusRunning)
				write(r2, b, "started\nfinished\n")
				setStatus(t, r2, b, api.StatusDone)
				want := "started\n" + tc.want + "started\nfinished\n"
				if log := jobLog(t, e.admin, a.Job.ID); log != want {
					t.Errorf("log =\n%s\nwant\n%s", log, want)
				}
			})
		})
	}
}
