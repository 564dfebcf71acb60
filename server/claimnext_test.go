package server_test

import (
	"context"
	"testing"

	"github.com/dstackai/dstack/api"
)

// TestEndOfAJobBringsTheNext: a runner that reports a job's end with Next
// gets its next job in the answer, a dependent made pending by that end
// included, and nothing when no job is pending.
func TestEndOfAJobBringsTheNext(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	rc := registerRunner(t, e.admin, "r")
	run := e.submit(t, e.admin, bashJob("a"), bashJob("b", "a"))

	a := claim(t, rc)
	if a.Job.Workflow != "a" {
		t.Fatalf("claimed %s, want a", a.Job.Workflow)
	}
	zero := 0
	next := &api.ClaimRequest{Free: bigRunner}
	res, err := rc.JobSetStatus(ctx, a.Job.ID, a.Lease, api.JobStatusUpdate{Status: api.StatusDone, ExitCode: &zero, Next: next})
	if err != nil {
		t.Fatalf("report a done: %v", err)
	}
	if res.ID != a.Job.ID || res.Status != api.StatusDone {
		t.Fatalf("the answer's job is %s %s, want a done", res.Workflow, res.Status)
	}
	if res.Next == nil || res.Next.Job.Workflow != "b" || res.Next.Job.RunName != run.Name || res.Next.Lease == 0 {
		t.Fatalf("the answer's next assignment is %+v, want b of %s", res.Next, run.Name)
	}
	b := res.Next
	setStatus(t, rc, b, api.StatusRunning) // the lease it came with holds the job

	res, err = rc.JobSetStatus(ctx, b.Job.ID, b.Lease, api.JobStatusUpdate{Status: api.StatusDone, ExitCode: &zero, Next: next})
	if err != nil {
		t.Fatalf("report b done: %v", err)
	}
	if res.Status != api.StatusDone || res.Next != nil {
		t.Fatalf("the answer is %s with next %+v, want done and no next job (none is pending)", res.Status, res.Next)
	}
}

// TestNextJobOfALostAnswerIsAssignedAgain: when the answer that carried the
// next job never reaches the runner, its next claim gets that job again,
// under the same lease; and only a final state brings a next job.
func TestNextJobOfALostAnswerIsAssignedAgain(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	rc := registerRunner(t, e.admin, "r")
	e.submit(t, e.admin, bashJob("x"), bashJob("y"))

	first := claim(t, rc)
	next := &api.ClaimRequest{Free: bigRunner}
	res, err := rc.JobSetStatus(ctx, first.Job.ID, first.Lease, api.JobStatusUpdate{Status: api.StatusRunning, Next: next})
	if err != nil {
		t.Fatalf("report running: %v", err)
	}
	if res.Next != nil {
		t.Fatalf("a running report brought job %s: only a job's end may", res.Next.Job.Workflow)
	}
	zero := 0
	res, err = rc.JobSetStatus(ctx, first.Job.ID, first.Lease, api.JobStatusUpdate{Status: api.StatusDone, ExitCode: &zero, Next: next})
	if err != nil {
		t.Fatalf("report done: %v", err)
	}
	if res.Next == nil {
		t.Fatal("the end brought no next job, with one pending")
	}
	lost := res.Next // as if the answer never arrived

	again := claim(t, rc)
	if again.Job.ID != lost.Job.ID || again.Lease != lost.Lease {
		t.Fatalf("the claim after a lost answer got %s (lease %d), want %s (lease %d) again", again.Job.Workflow, again.Lease, lost.Job.Workflow, lost.Lease)
	}
	setStatus(t, rc, again, api.StatusRunning)
	setStatus(t, rc, again, api.StatusDone)
}
