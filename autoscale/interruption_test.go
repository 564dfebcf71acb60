package autoscale_test

import (
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/store"
)

// spotInterrupted launches a spot instance for an interruptible job, has its
// runner claim the job, report a spot interruption and give the job back, as
// a runner watching the instance metadata does. It returns the job and the
// interrupted instance.
func spotInterrupted(t *testing.T, e *env) (string, *store.Instance) {
	t.Helper()
	jobID := e.submit(api.Resources{CPU: 1, MemoryMiB: 512, Interruptible: true})
	runners := e.running()
	ins := e.instances(store.InstanceRunning)
	if len(ins) != 1 {
		t.Fatalf("running instances = %+v, want 1", ins)
	}
	r := runners[ins[0].ID]
	j := e.claim(r)
	if j == nil || j.ID != jobID {
		t.Fatalf("claimed %+v, want %s", j, jobID)
	}
	e.step()
	if _, _, err := e.st.RunnerInterrupt(e.ctx, store.RunnerInterruptParams{ID: r.ID, Reason: "spot instance reclaimed", Now: e.clock.Now()}); err != nil {
		t.Fatal(err)
	}
	e.step() // while the runner still stops the job: nothing to plan for it
	if got := e.job(jobID); got.Status != api.StatusDownloading {
		t.Fatalf("job is %s, want still its runner's", got.Status)
	}
	if _, err := e.st.JobInterrupt(e.ctx, store.JobInterruptParams{ID: j.ID, RunnerID: r.ID, Lease: j.Lease,
		Cause: "spot instance reclaimed", MaxAttempts: 3, Now: e.clock.Now()}); err != nil {
		t.Fatal(err)
	}
	return jobID, ins[0]
}

// TestSpotInterruptionPlansReplacement: the instance of a runner that
// reported a spot interruption is taken as going away: the job it gave back
// gets a new instance, never the reclaimed one, which still counts against
// the limit until the cloud no longer has it.
func TestSpotInterruptionPlansReplacement(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.limit("f.small", true, 2)
	jobID, old := spotInterrupted(t, e)
	e.step()
	launching := e.instances(store.InstanceLaunching)
	if len(launching) != 1 || launching[0].JobID != jobID {
		t.Fatalf("launching after the interruption = %+v; want one instance for %s", launching, jobID)
	}
	if got, _ := e.st.InstanceGet(e.ctx, old.ID); got.State != store.InstanceRunning {
		t.Fatalf("reclaimed instance is %s; the cloud ends it, not the autoscaler", got.State)
	}
	// An idle timeout does not apply to it; the cloud's end does.
	e.cloud.Vanish(old.CloudID)
	e.step()
	if got, _ := e.st.InstanceGet(e.ctx, old.ID); got.State != store.InstanceGone {
		t.Fatalf("reclaimed instance is %s once the cloud dropped it, want gone", got.State)
	}
	if j := e.job(jobID); j.Status != api.StatusPending || j.Attempt != 1 {
		t.Fatalf("job %s attempt %d, want pending on attempt 1 for its new instance", j.Status, j.Attempt)
	}
}

// TestSpotInterruptionCountsAgainstLimit: with no room beside the reclaimed
// instance the job waits, not kept for that instance, and gets a new one as
// soon as the cloud has taken the old one away.
func TestSpotInterruptionCountsAgainstLimit(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.limit("f.small", true, 1)
	jobID, old := spotInterrupted(t, e)
	e.step()
	if n := len(e.instances(store.InstanceLaunching)); n != 0 {
		t.Fatalf("%d launched beside the reclaimed instance, over the limit of 1", n)
	}
	if j := e.job(jobID); j.StatusReason == "" {
		t.Errorf("the waiting job says nothing of why: %+v", j)
	}
	e.cloud.Vanish(old.CloudID)
	e.step()
	e.step()
	launching := e.instances(store.InstanceLaunching)
	if len(launching) != 1 || launching[0].JobID != jobID {
		t.Fatalf("launching once the reclaimed instance is gone = %+v; want one for %s", launching, jobID)
	}
}

// TestInterruptedSelfHostedRunnerIsNotFree: a self-hosted runner that
// reported an interruption takes no job, so the autoscaler launches.
func TestInterruptedSelfHostedRunnerIsNotFree(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.limit("f.small", false, 1)
	_, err := e.st.RunnerCreate(e.ctx, store.RunnerCreateParams{ID: "self", UserID: e.user.ID, Name: "self", Executor: "shell",
		Resources: api.HostResources{CPUs: 8, MemoryMiB: 8 << 10}, TokenHash: "self", TokenExpiresAt: e.clock.Now().Add(24 * time.Hour), Now: e.clock.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.st.RunnerInterrupt(e.ctx, store.RunnerInterruptParams{ID: "self", Reason: "reclaimed", Now: e.clock.Now()}); err != nil {
		t.Fatal(err)
	}
	e.submit(small)
	e.step()
	if n := len(e.cloud.LaunchCalls()); n != 1 {
		t.Fatalf("%d launches beside an interrupted self-hosted runner, want 1", n)
	}
}
