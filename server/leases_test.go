package server_test

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/client"
	"github.com/dstackai/dstack/internal/testutil"
	"github.com/dstackai/dstack/server"
	"github.com/dstackai/dstack/server/servertest"
)

// jobRequests are requests to every runner route about one job, made with
// a credential and a lease.
func jobRequests(t *testing.T, jobID, depID string) []req {
	t.Helper()
	var out []req
	for _, r := range server.Routes(t) {
		if r.Auth != "runnerToken" || !strings.Contains(r.Path, "{id}") {
			continue
		}
		path := fill(t, r.Path, map[string]string{"id": jobID, "dep": depID, "path": "model/weights.bin", "sha256": "abababababababababababababababababababababababababababababababab"})
		rq := req{method: r.Method, path: path}
		switch r.String() {
		case "POST /api/v1/runner/jobs/{id}/status":
			rq.body = `{"status":"failed","reason":"sabotage"}`
		case "POST /api/v1/runner/jobs/{id}/logs":
			rq.path += "?offset=0"
			rq.body = "intruder output\n"
		case "PUT /api/v1/runner/jobs/{id}/artifacts/{path...}":
			rq.body = "intruder artifact"
		case "GET /api/v1/runner/jobs/{id}/stop":
			rq.path += "?wait=0s"
		}
		out = append(out, rq)
	}
	if len(out) < 5 {
		t.Fatalf("found %d runner job routes: the route reader is broken", len(out))
	}
	return out
}

func withLease(rq req, token string, lease int64) req {
	rq.token = token
	rq.header = map[string]string{api.LeaseHeader: strconv.FormatInt(lease, 10)}
	return rq
}

func TestRunnerCannotTouchAnotherRunnersOrUsersJob(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	run := e.submit(t, e.admin, api.JobSpec{Workflow: "train", Provider: "bash", Commands: []string{"true"}, Artifacts: []string{"model"}})
	holderToken := registerRunnerToken(t, e.admin, "holder")
	otherToken := registerRunnerToken(t, e.admin, "other")
	bob := newUser(t, e.srv, "bob")
	bobsToken := registerRunnerToken(t, bob, "bobs-runner")
	holder := e.admin.WithToken(holderToken)
	a := claim(t, holder)
	if a.Job.ID != run.Jobs[0].ID {
		t.Fatalf("claimed job %s, want %s", a.Job.ID, run.Jobs[0].ID)
	}

	for _, rq := range jobRequests(t, a.Job.ID, a.Job.ID) {
		what := rq.method + " " + rq.path
		// Another runner of the same user: the job is not its own.
		wantError(t, what+" by another runner", do(t, e.srv.URL, withLease(rq, otherToken, a.Lease)), http.StatusConflict, api.CodeLeaseLost, "drop it")
		// A runner of another user: the job does not exist for it.
		wantError(t, what+" by another user's runner", do(t, e.srv.URL, withLease(rq, bobsToken, a.Lease)), http.StatusNotFound, api.CodeNotFound)
		// The holder with a lease that is not the job's.
		for _, lease := range []int64{a.Lease - 1, a.Lease + 1} {
			wantError(t, fmt.Sprintf("%s by the holder with lease %d", what, lease), do(t, e.srv.URL, withLease(rq, holderToken, lease)), http.StatusConflict, api.CodeLeaseLost)
		}
		// The holder without a lease is told to send one.
		noLease := rq
		noLease.token = holderToken
		wantError(t, what+" without a lease", do(t, e.srv.URL, noLease), http.StatusBadRequest, api.CodeInvalid, api.LeaseHeader)
	}

	// Nothing of theirs landed: the job is the holder's, unchanged.
	j := getJob(t, e.admin, run.Name, a.Job.ID)
	if j.Status != api.StatusDownloading || j.RunnerName != "holder" || j.StatusReason != "" {
		t.Errorf("job = %s on %q (%q); want downloading on holder", j.Status, j.RunnerName, j.StatusReason)
	}
	if got := jobLog(t, e.admin, a.Job.ID); got != "" {
		t.Errorf("job log = %q, want empty", got)
	}
	if fs, err := e.admin.ArtifactList(ctx, run.Name); err != nil || len(fs) != 0 {
		t.Errorf("artifacts = %+v, %v; want none", fs, err)
	}
	// Bob cannot see the run either.
	if _, err := bob.RunGet(ctx, run.Name); err == nil {
		t.Error("another user read the run")
	}
	if _, err := bob.JobLogs(ctx, a.Job.ID, client.LogOptions{}); err == nil {
		t.Error("another user read the job's log")
	}

	// The holder, with its lease, carries on.
	if _, err := holder.JobLogAppend(ctx, a.Job.ID, a.Lease, 0, []byte("mine\n")); err != nil {
		t.Fatalf("holder's log append: %v", err)
	}
	setStatus(t, holder, a, api.StatusDone)
	if got := jobLog(t, e.admin, a.Job.ID); got != "mine\n" {
		t.Errorf("job log = %q, want the holder's output", got)
	}
	// Once the job is done, even its holder's lease is spent.
	rq := jobRequests(t, a.Job.ID, a.Job.ID)[0]
	wantError(t, "a call about a finished job", do(t, e.srv.URL, withLease(rq, holderToken, a.Lease)), http.StatusConflict, api.CodeLeaseLost)
}

func TestRequeuedJobFencesItsFormerRunner(t *testing.T) {
	t.Parallel()
	clock := testutil.NewClock(time.Now())
	e := setup(t, withClock(clock), servertest.WithHeartbeatTimeout(time.Second))
	ctx := context.Background()
	run := e.submit(t, e.admin, bashJob("train"))
	oldToken := registerRunnerToken(t, e.admin, "old")
	old := e.admin.WithToken(oldToken)
	first := claim(t, old)
	if _, err := old.JobLogAppend(ctx, first.Job.ID, first.Lease, 0, []byte("attempt 1\n")); err != nil {
		t.Fatal(err)
	}

	// The old runner goes silent past the heartbeat timeout.
	clock.Advance(time.Minute)
	testutil.Eventually(t, "the silent runner's job to be requeued", func() bool {
		j := getJob(t, e.admin, run.Name, first.Job.ID)
		return j.Status == api.StatusPending && j.Attempt == 1
	})
	j := getJob(t, e.admin, run.Name, first.Job.ID)
	if !strings.Contains(j.StatusReason, "old") {
		t.Errorf("requeued job's reason %q does not name the runner that went away", j.StatusReason)
	}
	rs, err := e.admin.RunnerList(ctx)
	if err != nil || len(rs) != 1 || rs[0].Status != api.RunnerOffline {
		t.Errorf("runners = %+v, %v; want old offline", rs, err)
	}

	fresh := registerRunner(t, e.admin, "fresh")
	second := claim(t, fresh)
	if second.Job.ID != first.Job.ID || second.Lease == first.Lease {
		t.Fatalf("second claim got job %s lease %d; want the same job under a new lease (was %d)", second.Job.ID, second.Lease, first.Lease)
	}

	// The old runner comes back and keeps reporting under its old lease.
	for _, rq := range jobRequests(t, first.Job.ID, first.Job.ID) {
		wantError(t, rq.method+" "+rq.path+" under a stale lease", do(t, e.srv.URL, withLease(rq, oldToken, first.Lease)), http.StatusConflict, api.CodeLeaseLost)
	}
	if j := getJob(t, e.admin, run.Name, first.Job.ID); j.Status != api.StatusDownloading || j.RunnerName != "fresh" {
		t.Errorf("job = %s on %q, want downloading on fresh", j.Status, j.RunnerName)
	}

	// The log holds the first attempt's output and the server's line that
	// heads the second; the new holder learns where the log ends with an
	// empty append, and carries on from there.
	before := "attempt 1\n--- attempt 2 of 3 on runner fresh (attempt 1: runner old stopped responding) ---\n"
	size, err := fresh.JobLogAppend(ctx, second.Job.ID, second.Lease, 0, nil)
	if err != nil || size != int64(len(before)) {
		t.Fatalf("empty append = %d, %v; want the log's size %d", size, err, len(before))
	}
	if _, err := fresh.JobLogAppend(ctx, second.Job.ID, second.Lease, size, []byte("attempt 2\n")); err != nil {
		t.Fatal(err)
	}
	setStatus(t, fresh, second, api.StatusDone)
	if got := jobLog(t, e.admin, first.Job.ID); got != before+"attempt 2\n" {
		t.Errorf("job log = %q, want %q", got, before+"attempt 2\n")
	}
	if v := scrape(t, e.srv.URL)["dstack_jobs_interrupted_total"]; v != 1 {
		t.Errorf("dstack_jobs_interrupted_total = %v, want 1", v)
	}
}
