package server_test

import (
	"context"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/client"
	"github.com/dstackai/dstack/internal/testutil"
)

// These tests cover a server with no backend: a pending job that no
// registered runner of its user could ever take says why, and stops saying
// so once a runner that fits registers.

// registerRunnerWith registers a runner with the resources given and
// returns a client holding its credential.
func registerRunnerWith(t *testing.T, c *client.Client, name string, res api.HostResources) *client.Client {
	t.Helper()
	reg, err := c.RunnerRegister(context.Background(), api.RunnerRegisterRequest{
		Name: name, Hostname: name + ".example", Executor: "shell", Version: "test", Resources: res,
	})
	if err != nil {
		t.Fatalf("register runner %s: %v", name, err)
	}
	return c.WithToken(reg.Token)
}

// pendingReason reads the reason of a job through GET /runs, as `dstack ps`
// does; it fails the test unless the job is pending.
func pendingReason(t *testing.T, c *client.Client, run, jobID string) string {
	t.Helper()
	runs, err := c.RunList(context.Background(), true)
	if err != nil {
		t.Fatalf("list runs: %v", err)
	}
	for _, r := range runs {
		for _, j := range r.Jobs {
			if r.Name == run && j.ID == jobID {
				if j.Status != api.StatusPending {
					t.Fatalf("job %s is %s, want pending", j.Workflow, j.Status)
				}
				return j.StatusReason
			}
		}
	}
	t.Fatalf("GET /runs has no job %s of run %s", jobID, run)
	return ""
}

// waitReason waits until the job's reason is want.
func waitReason(t *testing.T, c *client.Client, run *api.Run, want string) {
	t.Helper()
	var got string
	testutil.Eventually(t, "the job's reason to be "+want, func() bool {
		got = pendingReason(t, c, run.Name, run.Jobs[0].ID)
		return got == want
	})
}

func withResources(j api.JobSpec, r api.Resources) api.JobSpec {
	j.Resources = r
	return j
}

func TestJobNoRunnerFitsSaysWhyUntilOneDoes(t *testing.T) {
	t.Parallel()
	e := setup(t)
	registerRunner(t, e.admin, "small") // 8 CPUs
	// Another user's big runner does not count for the admin's jobs.
	bob := newUser(t, e.srv, "bob")
	registerRunnerWith(t, bob, "bobs", api.HostResources{CPUs: 64, MemoryMiB: 64 << 10})

	run := e.submit(t, e.admin, withResources(bashJob("train"), api.Resources{CPU: 64}))
	waitReason(t, e.admin, run, "no runner has 64 CPUs (the largest has 8); add a runner that does, or lower resources")

	big := registerRunnerWith(t, e.admin, "big", api.HostResources{CPUs: 64, MemoryMiB: 64 << 10})
	waitReason(t, e.admin, run, "")
	a, err := big.RunnerClaim(context.Background(), api.ClaimRequest{
		Free: api.HostResources{CPUs: 64, MemoryMiB: 64 << 10}, Wait: api.Duration(10 * time.Second)})
	if err != nil || a == nil || a.Job.ID != run.Jobs[0].ID {
		t.Fatalf("big runner's claim = %+v, %v; want the job", a, err)
	}
	if j := getJob(t, e.admin, run.Name, a.Job.ID); j.RunnerName != "big" || j.StatusReason != "" {
		t.Errorf("job = %s on %q (%q); want on big, no reason", j.Status, j.RunnerName, j.StatusReason)
	}
}

func TestJobAskingForAnAbsentGPUSaysWhy(t *testing.T) {
	t.Parallel()
	e := setup(t)
	registerRunnerWith(t, e.admin, "t4", api.HostResources{CPUs: 8, MemoryMiB: 16 << 10, GPUs: []api.GPU{{Name: "Tesla T4", MemoryMiB: 16 << 10}}})
	run := e.submit(t, e.admin, withResources(bashJob("train"), api.Resources{GPU: &api.GPURequest{Count: 1, Name: "a100"}}))
	waitReason(t, e.admin, run, `no runner has a GPU matching "a100" (runners have Tesla T4); add a runner that does, or change resources.gpu.name`)

	// The name matches case-insensitively, as a substring.
	registerRunnerWith(t, e.admin, "a100", api.HostResources{CPUs: 8, MemoryMiB: 16 << 10, GPUs: []api.GPU{{Name: "NVIDIA A100-SXM4-40GB", MemoryMiB: 40 << 10}}})
	waitReason(t, e.admin, run, "")
}

func TestJobWithNoRunnerRegisteredSaysHowToStartOne(t *testing.T) {
	t.Parallel()
	e := setup(t)
	run := e.submit(t, e.admin, bashJob("hello"))
	waitReason(t, e.admin, run, "no runner is registered: start one with dstack-runner start")

	rc := registerRunner(t, e.admin, "r1")
	waitReason(t, e.admin, run, "")
	if a := claim(t, rc); a.Job.ID != run.Jobs[0].ID {
		t.Fatalf("claimed %s, want %s", a.Job.ID, run.Jobs[0].ID)
	}
}

// A job that fits a busy runner says so ("waiting: 1 runner that fits is
// busy", not that no runner fits) once it has waited 5s: a queue that
// drains sooner is not written a reason per job. The reason goes once the
// runner is free.
func TestJobThatFitsABusyRunnerSaysItIsBusy(t *testing.T) {
	t.Parallel()
	clock := testutil.NewClock(time.Now())
	e := setup(t, withClock(clock))
	rc := registerRunner(t, e.admin, "r1")
	first := e.submit(t, e.admin, bashJob("first"))
	a := claim(t, rc)
	if a.Job.ID != first.Jobs[0].ID {
		t.Fatalf("claimed %s, want the first job", a.Job.ID)
	}
	second := e.submit(t, e.admin, bashJob("second"))
	big := e.submit(t, e.admin, withResources(bashJob("big"), api.Resources{MemoryMiB: 1 << 20}))
	// The pass that says why the big job waits has seen the second.
	waitReason(t, e.admin, big, "no runner has 1024GB memory (the largest has 16GB); add a runner that does, or lower resources")
	if got := pendingReason(t, e.admin, second.Name, second.Jobs[0].ID); got != "" {
		t.Fatalf("a job queued a moment ago for a busy runner says %q; want no reason yet", got)
	}
	clock.Advance(5 * time.Second)
	waitReason(t, e.admin, second, "waiting: 1 runner that fits is busy")
	setStatus(t, rc, a, api.StatusRunning)
	setStatus(t, rc, a, api.StatusDone)
	waitReason(t, e.admin, second, "")
}

// With a backend (the local one is on by default) the autoscaler says why
// jobs wait: a job that fits a busy runner says the runner is busy, one that
// no registered runner could take says what they lack, not the same
// "no runner can take it" for both.
func TestBackendWaitingReasonsTellBusyFromImpossible(t *testing.T) {
	t.Parallel()
	e := setup(t, withBackends(localFake()))
	rc := registerRunner(t, e.admin, "r1") // 8 CPUs
	first := e.submit(t, e.admin, bashJob("first"))
	if a := claim(t, rc); a.Job.ID != first.Jobs[0].ID {
		t.Fatalf("claimed %s, want the first job", a.Job.ID)
	}
	second := e.submit(t, e.admin, bashJob("second"))
	big := e.submit(t, e.admin, withResources(bashJob("big"), api.Resources{CPU: 1000}))
	waitReason(t, e.admin, second, "waiting: 1 runner that fits is busy; no on-demand limit is set to launch more (`dstack on-demand limit` adds one)")
	waitReason(t, e.admin, big, "no runner has 1000 CPUs (the largest has 8) and no on-demand limit is set; add a runner that does, or lower resources, or add a limit with `dstack on-demand limit`")
}
