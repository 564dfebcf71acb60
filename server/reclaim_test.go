package server_test

import (
	"context"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
)

// TestClaimGivesAgainAJobNeverReceived: the answer to a claim is lost (the
// replica that made it died, the connection broke), so the runner claims
// again while the server has it holding the job. It gets that job again,
// under the same lease, rather than another job or none, and can run it to
// the end. A job it has started is not given again.
func TestClaimGivesAgainAJobNeverReceived(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	rc := registerRunner(t, e.admin, "r1")
	code := uploadCode(t, e.admin)
	submitIndependentJobs(t, e.admin, code, 2)

	lost, err := rc.RunnerClaim(ctx, api.ClaimRequest{Free: bigRunner})
	if err != nil || lost == nil {
		t.Fatalf("first claim: %v, %v", lost, err)
	}
	// The runner never saw lost; it claims again.
	again, err := rc.RunnerClaim(ctx, api.ClaimRequest{Free: bigRunner, Wait: api.Duration(100 * time.Millisecond)})
	if err != nil {
		t.Fatal(err)
	}
	if again == nil || again.Job.ID != lost.Job.ID || again.Lease != lost.Lease {
		t.Fatalf("second claim got %+v, want job %s again under lease %d", again, lost.Job.ID, lost.Lease)
	}
	if _, err := rc.JobSetStatus(ctx, again.Job.ID, again.Lease, api.JobStatusUpdate{Status: api.StatusRunning}); err != nil {
		t.Fatalf("run the job given again: %v", err)
	}
	// Started, it is the runner's to finish: a claim now gets the other job.
	next, err := rc.RunnerClaim(ctx, api.ClaimRequest{Free: bigRunner, Wait: api.Duration(100 * time.Millisecond)})
	if err != nil {
		t.Fatal(err)
	}
	if next == nil || next.Job.ID == lost.Job.ID {
		t.Fatalf("a claim after the job started got %+v, want the other job", next)
	}
}
