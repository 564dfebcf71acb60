package server_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/client"
	"github.com/dstackai/dstack/store"
)

// prepareDone runs a one-job run of prepare for c to done, with one artifact
// file, and returns the run and the job.
func (e *apiEnv) prepareDone(t *testing.T, c, rc *client.Client, content string) (*api.Run, api.Job) {
	t.Helper()
	prepare := api.JobSpec{Workflow: "prepare", Provider: "bash", Commands: []string{"true"}, Artifacts: []string{"data"}}
	run := e.submit(t, c, prepare)
	a := claim(t, rc)
	if a.Job.RunName != run.Name {
		t.Fatalf("claimed a job of run %s, want %s", a.Job.RunName, run.Name)
	}
	if err := rc.JobArtifactUpload(context.Background(), a.Job.ID, a.Lease, "data/numbers.txt", strings.NewReader(content), int64(len(content))); err != nil {
		t.Fatalf("upload: %v", err)
	}
	setStatus(t, rc, a, api.StatusDone)
	return run, a.Job
}

// tagged is train depending on WORKFLOW:TAG.
func tagged(workflow, tag string) api.JobSpec {
	j := bashJob("train")
	j.DependsOnTags = []api.TaggedDependency{{Workflow: workflow, Tag: tag}}
	return j
}

func TestTagARunAndDependOnIt(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	rc := registerRunner(t, e.admin, "r")
	prep, prepJob := e.prepareDone(t, e.admin, rc, "1\n2\n3\n")

	res, err := e.admin.TagPut(ctx, "data", prep.Name, false)
	if err != nil {
		t.Fatalf("tag: %v", err)
	}
	if !res.Created || res.Tag.Name != "data" || res.Tag.RunName != prep.Name || res.Tag.Workflow != "prepare" ||
		len(res.Tag.Workflows) != 1 || res.Tag.Workflows[0] != "prepare" || res.Tag.CreatedAt.IsZero() {
		t.Fatalf("TagPut = %+v, want data created on %s (prepare)", res, prep.Name)
	}
	rp := do(t, e.srv.URL, req{method: http.MethodPut, path: "/api/v1/tags/data", token: e.srv.AdminToken, body: `{"run_name":"` + prep.Name + `"}`})
	if rp.status != http.StatusOK || !strings.Contains(string(rp.body), `"created":false`) {
		t.Errorf("tagging the same run again: %d %s, want 200 not created", rp.status, rp.body)
	}
	tags, err := e.admin.TagList(ctx)
	if err != nil || len(tags) != 1 || tags[0].Name != "data" || tags[0].RunName != prep.Name {
		t.Fatalf("TagList = %+v, %v; want data on %s", tags, err, prep.Name)
	}

	// A run depending on prepare:data does not run prepare: train is queued
	// at once, resolved to the tagged run's job, and gets its artifacts.
	run := e.submit(t, e.admin, tagged("prepare", "data"))
	if len(run.Jobs) != 1 || run.Jobs[0].Status != api.StatusPending {
		t.Fatalf("run = %+v, want only train, pending", run.Jobs)
	}
	want := []api.TaggedDependency{{Workflow: "prepare", Tag: "data", RunName: prep.Name, JobID: prepJob.ID}}
	if got := run.Jobs[0].Spec.DependsOnTags; len(got) != 1 || got[0] != want[0] {
		t.Fatalf("train's tagged dependencies = %+v, want %+v", got, want)
	}
	b := claim(t, rc)
	if b.Job.RunName != run.Name || b.Job.Workflow != "train" {
		t.Fatalf("claimed %s of %s, want train of %s", b.Job.Workflow, b.Job.RunName, run.Name)
	}
	deps, err := rc.JobDependencies(ctx, b.Job.ID, b.Lease)
	if err != nil {
		t.Fatal(err)
	}
	if len(deps) != 1 || deps[0].JobID != prepJob.ID || deps[0].RunName != prep.Name || deps[0].Tag != "data" ||
		len(deps[0].Files) != 1 || deps[0].Files[0].Path != "data/numbers.txt" {
		t.Fatalf("dependencies = %+v, want prepare of %s with data/numbers.txt", deps, prep.Name)
	}
	body, err := rc.JobDependencyArtifact(ctx, b.Job.ID, b.Lease, prepJob.ID, "data/numbers.txt")
	if err != nil {
		t.Fatal(err)
	}
	if got := string(bytesOf(t, body)); got != "1\n2\n3\n" {
		t.Errorf("dependency artifact = %q", got)
	}

	// Moving the tag needs force, and does not change submitted runs. The
	// runner runs train while it takes the next prepare (a runner that
	// claims while holding a job it has not started gets that job again).
	setStatus(t, rc, b, api.StatusRunning)
	other, otherJob := e.prepareDone(t, e.admin, rc, "4\n")
	_, err = e.admin.TagPut(ctx, "data", other.Name, false)
	wantAPIError(t, "moving a tag without force", err, http.StatusConflict, api.CodeConflict)
	if err != nil && (!strings.Contains(err.Error(), prep.Name) || !strings.Contains(err.Error(), "--force")) {
		t.Errorf("conflict message %q does not name %s and --force", err, prep.Name)
	}
	res, err = e.admin.TagPut(ctx, "data", other.Name, true)
	if err != nil || res.Created || res.PreviousRunName != prep.Name || res.Tag.RunName != other.Name {
		t.Fatalf("forced TagPut = %+v, %v; want moved from %s to %s", res, err, prep.Name, other.Name)
	}
	if deps, err := rc.JobDependencies(ctx, b.Job.ID, b.Lease); err != nil || len(deps) != 1 || deps[0].JobID != prepJob.ID {
		t.Errorf("after the move, the submitted job's dependencies = %+v, %v; want still %s", deps, err, prepJob.ID)
	}
	setStatus(t, rc, b, api.StatusDone)
	run = e.submit(t, e.admin, tagged("prepare", "data"))
	if got := run.Jobs[0].Spec.DependsOnTags[0]; got.JobID != otherJob.ID || got.RunName != other.Name {
		t.Errorf("a run submitted after the move depends on %+v, want %s of %s", got, otherJob.ID, other.Name)
	}

	// Deleting the tag keeps the run; depending on it is then refused.
	deleted, err := e.admin.TagDelete(ctx, "data")
	if err != nil || deleted.RunName != other.Name {
		t.Fatalf("TagDelete = %+v, %v", deleted, err)
	}
	_, err = e.admin.TagDelete(ctx, "data")
	wantAPIError(t, "deleting a deleted tag", err, http.StatusNotFound, api.CodeNotFound)
	if _, err := e.admin.RunGet(ctx, other.Name); err != nil {
		t.Errorf("the run went with its tag: %v", err)
	}
}

func TestTagRefusals(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	rc := registerRunner(t, e.admin, "r")
	waiting := e.submit(t, e.admin, bashJob("prepare"))
	_, err := e.admin.TagPut(ctx, "data", waiting.Name, false)
	wantAPIError(t, "tagging a pending run", err, http.StatusBadRequest, api.CodeInvalid)
	a := claim(t, rc)
	one := 1
	if _, err := rc.JobSetStatus(ctx, a.Job.ID, a.Lease, api.JobStatusUpdate{Status: api.StatusFailed, ExitCode: &one}); err != nil {
		t.Fatal(err)
	}
	_, err = e.admin.TagPut(ctx, "data", waiting.Name, false)
	wantAPIError(t, "tagging a failed run", err, http.StatusBadRequest, api.CodeInvalid)
	_, err = e.admin.TagPut(ctx, "data", "no-such-run", false)
	wantAPIError(t, "tagging an unknown run", err, http.StatusNotFound, api.CodeNotFound)
	rp := do(t, e.srv.URL, req{method: http.MethodPut, path: "/api/v1/tags/-bad", token: e.srv.AdminToken, body: `{"run_name":"x"}`})
	wantError(t, "a bad tag name", rp, http.StatusBadRequest, api.CodeInvalid, `"-bad" is not a valid tag`)
	rp = do(t, e.srv.URL, req{method: http.MethodPut, path: "/api/v1/tags/ok", token: e.srv.AdminToken, body: `{}`})
	wantError(t, "no run_name", rp, http.StatusBadRequest, api.CodeInvalid, "run_name")
	if tags, err := e.admin.TagList(ctx); err != nil || len(tags) != 0 {
		t.Errorf("TagList after refusals = %+v, %v; want none", tags, err)
	}
}

func TestDependingOnAnUnknownTagRecordsNothing(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	rc := registerRunner(t, e.admin, "r")
	prep, _ := e.prepareDone(t, e.admin, rc, "x")
	before, err := e.admin.RunList(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	rp := do(t, e.srv.URL, req{method: http.MethodPost, path: "/api/v1/runs", token: e.srv.AdminToken,
		body: runBody(t, "train", e.codeID, tagged("prepare", "latest-data"))})
	wantError(t, "unknown tag", rp, http.StatusBadRequest, api.CodeInvalid, `prepare:latest-data`, `no tag "latest-data"`, "`dstack tags`")

	// A tagged run without the workflow is refused too, naming what it has.
	if _, err := e.admin.TagPut(ctx, "data", prep.Name, false); err != nil {
		t.Fatal(err)
	}
	rp = do(t, e.srv.URL, req{method: http.MethodPost, path: "/api/v1/runs", token: e.srv.AdminToken,
		body: runBody(t, "train", e.codeID, tagged("pretrain", "data"))})
	wantError(t, "tagged run without the workflow", rp, http.StatusBadRequest, api.CodeInvalid, `no workflow "pretrain"`, "its workflows are: prepare")

	// A workflow both in the run and tagged, or a malformed tag, is refused.
	both := tagged("prepare", "data")
	both.DependsOn = []string{"prepare"}
	rp = do(t, e.srv.URL, req{method: http.MethodPost, path: "/api/v1/runs", token: e.srv.AdminToken,
		body: runBody(t, "train", e.codeID, bashJob("prepare"), both)})
	wantError(t, "prepare twice", rp, http.StatusBadRequest, api.CodeInvalid, `workflow "prepare" twice`)
	rp = do(t, e.srv.URL, req{method: http.MethodPost, path: "/api/v1/runs", token: e.srv.AdminToken,
		body: runBody(t, "train", e.codeID, tagged("prepare", "a b"))})
	wantError(t, "malformed tag", rp, http.StatusBadRequest, api.CodeInvalid, `"a b" is not a tag`)

	after, err := e.admin.RunList(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) {
		t.Errorf("refused submissions recorded runs: %d before, %d after", len(before), len(after))
	}
}

// newUserWithID is newUser that also returns the user's ID.
func newUserWithID(t *testing.T, e *apiEnv, name string) (*client.Client, string) {
	t.Helper()
	token := "dstu_" + randomHex(t)
	sum := sha256.Sum256([]byte(token))
	id := randomHex(t)[:16]
	if _, err := e.srv.Store().UserCreate(context.Background(), store.UserCreateParams{
		ID: id, Name: name, TokenHash: hex.EncodeToString(sum[:]), Now: time.Now(),
	}); err != nil {
		t.Fatalf("create user %s: %v", name, err)
	}
	return e.srv.Client().WithToken(token), id
}

func TestAnotherUsersTagIsInvisible(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	rc := registerRunner(t, e.admin, "r")
	prep, prepJob := e.prepareDone(t, e.admin, rc, "admin's")
	if _, err := e.admin.TagPut(ctx, "data", prep.Name, false); err != nil {
		t.Fatal(err)
	}
	bob, bobID := newUserWithID(t, e, "bob")
	uploadCode(t, bob) // the same archive, his own upload
	if tags, err := bob.TagList(ctx); err != nil || len(tags) != 0 {
		t.Errorf("bob's TagList = %+v, %v; want none", tags, err)
	}
	_, err := bob.RunSubmit(ctx, api.RunSubmitRequest{Workflow: "train", CodeID: e.codeID, Jobs: []api.JobSpec{tagged("prepare", "data")}})
	wantAPIError(t, "bob depending on the admin's tag", err, http.StatusBadRequest, api.CodeInvalid)
	_, err = bob.TagPut(ctx, "mine", prep.Name, true)
	wantAPIError(t, "bob tagging the admin's run", err, http.StatusNotFound, api.CodeNotFound)
	_, err = bob.TagDelete(ctx, "data")
	wantAPIError(t, "bob deleting the admin's tag", err, http.StatusNotFound, api.CodeNotFound)

	// Bob's own tag of the same name is another tag; a job ID he sends is
	// replaced by the one his tag resolves to.
	bobRunner := registerRunner(t, bob, "bob-r")
	bobPrep, bobJob := e.prepareDone(t, bob, bobRunner, "bob's")
	if _, err := bob.TagPut(ctx, "data", bobPrep.Name, false); err != nil {
		t.Fatal(err)
	}
	forged := tagged("prepare", "data")
	forged.DependsOnTags[0].JobID, forged.DependsOnTags[0].RunName = prepJob.ID, prep.Name
	run := e.submit(t, bob, forged)
	if got := run.Jobs[0].Spec.DependsOnTags[0]; got.JobID != bobJob.ID || got.RunName != bobPrep.Name {
		t.Fatalf("bob's tagged dependency = %+v, want his own job %s", got, bobJob.ID)
	}
	if tags, _ := e.admin.TagList(ctx); len(tags) != 1 || tags[0].RunName != prep.Name {
		t.Errorf("the admin's tags = %+v, want data on %s only", tags, prep.Name)
	}

	// A runner reaches only its user's jobs: a job whose recorded tagged
	// dependency is another user's job (written straight to the store, as
	// the API cannot) gets nothing.
	bad := tagged("prepare", "data")
	bad.DependsOnTags[0].JobID, bad.DependsOnTags[0].RunName = prepJob.ID, prep.Name
	b := claim(t, bobRunner) // bob's train from above
	setStatus(t, bobRunner, b, api.StatusDone)
	if _, err := e.srv.Store().RunCreate(ctx, store.RunCreateParams{
		ID: randomHex(t)[:16], Name: "forged-run", UserID: bobID, Workflow: "train", CodeID: e.codeID, Now: time.Now(),
		Jobs: []store.JobCreate{{ID: randomHex(t)[:16], Spec: bad}},
	}); err != nil {
		t.Fatal(err)
	}
	f := claim(t, bobRunner)
	if f.Job.RunName != "forged-run" {
		t.Fatalf("claimed %s, want the forged run's job", f.Job.RunName)
	}
	_, err = bobRunner.JobDependencies(ctx, f.Job.ID, f.Lease)
	wantAPIError(t, "dependencies naming another user's job", err, http.StatusNotFound, api.CodeNotFound)
	_, err = bobRunner.JobDependencyArtifact(ctx, f.Job.ID, f.Lease, prepJob.ID, "data/numbers.txt")
	wantAPIError(t, "another user's artifact as a dependency", err, http.StatusNotFound, api.CodeNotFound)
}
