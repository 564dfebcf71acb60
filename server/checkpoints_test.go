package server_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/client"
	"github.com/dstackai/dstack/store"
)

func sumOf(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func checkpointJob() api.JobSpec {
	j := bashJob("train")
	j.Checkpoints = []string{"ckpt"}
	j.CheckpointInterval = api.Duration(time.Minute)
	return j
}

// syncCheckpoint stores files (path: content) as a checkpoint, as a runner
// does: the manifest sorted by path (the runner's sortedFiles).
func syncCheckpoint(t *testing.T, rc *client.Client, a *api.Assignment, files map[string]string) *api.Checkpoint {
	t.Helper()
	ctx := context.Background()
	var m api.CheckpointManifest
	var sums []string
	for _, p := range slices.Sorted(maps.Keys(files)) {
		content := files[p]
		s := sumOf([]byte(content))
		sums = append(sums, s)
		m.Files = append(m.Files, api.CheckpointFile{Path: p, Size: int64(len(content)), SHA256: s})
	}
	missing, err := rc.JobCheckpointMissing(ctx, a.Job.ID, a.Lease, sums)
	if err != nil {
		t.Fatalf("missing: %v", err)
	}
	for p, content := range files {
		s := sumOf([]byte(content))
		for _, miss := range missing {
			if miss == s {
				if err := rc.JobCheckpointBlobUpload(ctx, a.Job.ID, a.Lease, s, strings.NewReader(content), int64(len(content))); err != nil {
					t.Fatalf("upload %s: %v", p, err)
				}
			}
		}
	}
	cp, err := rc.JobCheckpointCommit(ctx, a.Job.ID, a.Lease, m)
	if err != nil {
		t.Fatalf("commit: %v", err)
	}
	return cp
}

// A sync cut short, by a refused upload or by the server going away
// before the manifest, is never restored: the next attempt gets the
// previous complete checkpoint.
func TestCheckpointCutMidSyncIsNeverRestored(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	run := e.submit(t, e.admin, checkpointJob())
	token := registerRunnerToken(t, e.admin, "r")
	rc := e.admin.WithToken(token)
	a := claim(t, rc)
	setStatus(t, rc, a, api.StatusRunning)
	if _, err := rc.JobCheckpoint(ctx, a.Job.ID, a.Lease); !client.IsCode(err, api.CodeNotFound) {
		t.Fatalf("checkpoint before any = %v, want not found", err)
	}
	cp1 := syncCheckpoint(t, rc, a, map[string]string{"ckpt/epoch-01": "one", "ckpt/state": "s1"})
	if cp1.Seq != 1 || cp1.Files != 2 || cp1.Size != 5 {
		t.Fatalf("first checkpoint %+v", cp1)
	}
	// An unchanged file is not asked for again.
	if missing, err := rc.JobCheckpointMissing(ctx, a.Job.ID, a.Lease, []string{sumOf([]byte("one")), sumOf([]byte("two"))}); err != nil || len(missing) != 1 || missing[0] != sumOf([]byte("two")) {
		t.Fatalf("missing after the first checkpoint = %v, %v; want only the new content", missing, err)
	}

	// The second sync: one content cut short (its body ends early), one
	// whose body is not what its hash says, one stored whole; then the
	// server goes away before the manifest.
	two := strings.Repeat("2", 1000)
	err := rc.JobCheckpointBlobUpload(ctx, a.Job.ID, a.Lease, sumOf([]byte(two)), strings.NewReader(two[:500]), int64(len(two)))
	if !client.IsCode(err, api.CodeInvalid) {
		t.Fatalf("a cut upload = %v, want invalid", err)
	}
	err = rc.JobCheckpointBlobUpload(ctx, a.Job.ID, a.Lease, sumOf([]byte("s2")), strings.NewReader("xx"), 2)
	if !client.IsCode(err, api.CodeInvalid) || !strings.Contains(err.Error(), "SHA-256") {
		t.Fatalf("an upload of other content = %v, want invalid naming the SHA-256", err)
	}
	if err := rc.JobCheckpointBlobUpload(ctx, a.Job.ID, a.Lease, sumOf([]byte("s2")), strings.NewReader("s2"), 2); err != nil {
		t.Fatal(err)
	}
	// A manifest listing a content not stored is refused whole.
	_, err = rc.JobCheckpointCommit(ctx, a.Job.ID, a.Lease, api.CheckpointManifest{Files: []api.CheckpointFile{
		{Path: "ckpt/epoch-02", Size: int64(len(two)), SHA256: sumOf([]byte(two))},
		{Path: "ckpt/state", Size: 2, SHA256: sumOf([]byte("s2"))},
	}})
	if !client.IsCode(err, api.CodeConflict) {
		t.Fatalf("a manifest of missing content = %v, want conflict", err)
	}
	// Files outside the checkpoint paths are refused.
	_, err = rc.JobCheckpointCommit(ctx, a.Job.ID, a.Lease, api.CheckpointManifest{Files: []api.CheckpointFile{{Path: "other/state", Size: 2, SHA256: sumOf([]byte("s2"))}}})
	if !client.IsCode(err, api.CodeInvalid) || !strings.Contains(err.Error(), "not under the job's checkpoint paths") {
		t.Fatalf("a file outside the checkpoint paths = %v", err)
	}
	for _, bad := range []string{"../x", "/abs", "ckpt/../../x"} {
		_, err = rc.JobCheckpointCommit(ctx, a.Job.ID, a.Lease, api.CheckpointManifest{Files: []api.CheckpointFile{{Path: bad, Size: 2, SHA256: sumOf([]byte("s2"))}}})
		if !client.IsCode(err, api.CodeInvalid) {
			t.Fatalf("manifest path %q = %v, want invalid", bad, err)
		}
	}
	e.srv.Restart(t)
	rc, err = client.New(e.srv.URL, token)
	if err != nil {
		t.Fatal(err)
	}
	// The runner is gone: its job goes back to the queue.
	if _, err := rc.JobSetStatus(ctx, a.Job.ID, a.Lease, api.JobStatusUpdate{Status: api.StatusInterrupted, Reason: "the machine went away"}); err != nil {
		t.Fatal(err)
	}
	a2 := claim(t, rc)
	if a2.Job.ID != a.Job.ID || a2.Job.Attempt != 1 {
		t.Fatalf("claimed %s attempt %d", a2.Job.ID, a2.Job.Attempt)
	}
	if _, err := rc.JobCheckpoint(ctx, a.Job.ID, a.Lease); err == nil {
		t.Fatal("the first attempt's lease still reads the checkpoint")
	}
	got, err := rc.JobCheckpoint(ctx, a2.Job.ID, a2.Lease)
	if err != nil {
		t.Fatal(err)
	}
	if got.Seq != 1 || len(got.Manifest) != 2 || got.Manifest[0].Path != "ckpt/epoch-01" || got.Manifest[1].SHA256 != sumOf([]byte("s1")) {
		t.Fatalf("restored %+v, want the first complete checkpoint", got)
	}
	for _, f := range got.Manifest {
		rd, err := rc.JobCheckpointBlob(ctx, a2.Job.ID, a2.Lease, f.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(rd)
		rd.Close()
		if sumOf(b) != f.SHA256 {
			t.Fatalf("content of %s is %q", f.Path, b)
		}
	}
	// The user sees it: ps, the run's checkpoints, the storage used.
	r, err := e.admin.RunGet(ctx, run.Name)
	if err != nil {
		t.Fatal(err)
	}
	if c := r.Jobs[0].Checkpoint; c == nil || c.Seq != 1 || c.Attempt != 0 || c.Size != 5 || c.Manifest != nil {
		t.Fatalf("run's job checkpoint %+v", c)
	}
	cps, err := e.admin.RunCheckpoints(ctx, run.Name)
	if err != nil || len(cps) != 1 || len(cps[0].Manifest) != 2 || cps[0].Workflow != "train" {
		t.Fatalf("RunCheckpoints = %+v, %v", cps, err)
	}
	other := newUser(t, e.srv, "other")
	if _, err := other.RunCheckpoints(ctx, run.Name); !client.IsCode(err, api.CodeNotFound) {
		t.Fatalf("another user's RunCheckpoints = %v, want not found", err)
	}
	// The new attempt's checkpoint replaces it; the contents it no longer
	// lists go.
	cp2 := syncCheckpoint(t, rc, a2, map[string]string{"ckpt/epoch-01": "one", "ckpt/epoch-02": two})
	if cp2.Seq != 2 || cp2.Attempt != 1 || cp2.Size != int64(3+len(two)) {
		t.Fatalf("second checkpoint %+v", cp2)
	}
	if missing, err := rc.JobCheckpointMissing(ctx, a2.Job.ID, a2.Lease, []string{sumOf([]byte("s1")), sumOf([]byte("s2"))}); err != nil || len(missing) != 2 {
		t.Fatalf("contents no checkpoint lists are still stored: missing %v, %v", missing, err)
	}
	// Done: the checkpoint goes.
	setStatus(t, rc, a2, api.StatusDone)
	r, err = e.admin.RunGet(ctx, run.Name)
	if err != nil || r.Jobs[0].Checkpoint != nil {
		t.Fatalf("a done job's checkpoint: %+v, %v", r.Jobs[0].Checkpoint, err)
	}
}

// `dstack run --resume`: a failed run's job runs again as its next attempt,
// from its checkpoint.
func TestRunResume(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	run := e.submit(t, e.admin, checkpointJob())
	rc := registerRunner(t, e.admin, "r")
	a := claim(t, rc)
	setStatus(t, rc, a, api.StatusRunning)
	if _, err := e.admin.RunResume(ctx, run.Name); !client.IsCode(err, api.CodeConflict) || !strings.Contains(err.Error(), "stop it first") {
		t.Fatalf("resume of a running run = %v, want conflict", err)
	}
	syncCheckpoint(t, rc, a, map[string]string{"ckpt/e": "12"})
	if _, err := rc.JobSetStatus(ctx, a.Job.ID, a.Lease, api.JobStatusUpdate{Status: api.StatusFailed, Reason: "oom"}); err != nil {
		t.Fatal(err)
	}
	other := newUser(t, e.srv, "other")
	if _, err := other.RunResume(ctx, run.Name); !client.IsCode(err, api.CodeNotFound) {
		t.Fatalf("another user's resume = %v, want not found", err)
	}
	r, err := e.admin.RunResume(ctx, run.Name)
	if err != nil {
		t.Fatal(err)
	}
	if j := r.Jobs[0]; j.Status != api.StatusPending || j.Attempt != 1 || j.Checkpoint == nil {
		t.Fatalf("resumed job %+v", j)
	}
	a2 := claim(t, rc)
	if a2.Job.Attempt != 1 {
		t.Fatalf("claimed attempt %d", a2.Job.Attempt)
	}
	got, err := rc.JobCheckpoint(ctx, a2.Job.ID, a2.Lease)
	if err != nil || len(got.Manifest) != 1 {
		t.Fatalf("checkpoint of the resumed job = %+v, %v", got, err)
	}
	log := jobLog(t, e.admin, a.Job.ID)
	if !strings.Contains(log, "--- attempt 2 of") || !strings.Contains(log, "resumed by the user") {
		t.Errorf("the resumed attempt's log has no marker:\n%s", log)
	}
	setStatus(t, rc, a2, api.StatusDone)
	rp := do(t, e.srv.URL, req{method: http.MethodPost, path: "/api/v1/runs/" + run.Name + "/resume", token: e.srv.AdminToken})
	wantError(t, "resume of a done run", rp, http.StatusConflict, api.CodeConflict, "nothing to resume")
}

func TestCheckpointSettingsValidated(t *testing.T) {
	t.Parallel()
	e := setup(t)
	for _, j := range []api.JobSpec{
		func() api.JobSpec { j := checkpointJob(); j.Checkpoints = []string{"../out"}; return j }(),
		func() api.JobSpec { j := checkpointJob(); j.Checkpoints = []string{"."}; return j }(),
		func() api.JobSpec { j := checkpointJob(); j.Checkpoints = []string{"a//b"}; return j }(),
		func() api.JobSpec { j := checkpointJob(); j.CheckpointInterval = 0; return j }(),
		func() api.JobSpec { j := bashJob("train"); j.KeepCheckpoints = true; return j }(),
	} {
		_, err := e.admin.RunSubmit(context.Background(), api.RunSubmitRequest{Workflow: "train", CodeID: e.codeID, Jobs: []api.JobSpec{j}})
		if !client.IsCode(err, api.CodeInvalid) {
			t.Errorf("submit %+v = %v, want invalid", j, err)
		}
	}
}

// keep-checkpoints keeps a done job's checkpoint, counted in its user's
// storage.
func TestCheckpointKept(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	j := checkpointJob()
	j.KeepCheckpoints = true
	run := e.submit(t, e.admin, j)
	rc := registerRunner(t, e.admin, "r")
	a := claim(t, rc)
	setStatus(t, rc, a, api.StatusRunning)
	syncCheckpoint(t, rc, a, map[string]string{"ckpt/model": strings.Repeat("m", 4096)})
	setStatus(t, rc, a, api.StatusDone)
	r, err := e.admin.RunGet(ctx, run.Name)
	if err != nil || r.Jobs[0].Checkpoint == nil || r.Jobs[0].Checkpoint.Size != 4096 {
		t.Fatalf("kept checkpoint: %+v, %v", r.Jobs[0].Checkpoint, err)
	}
	used, err := e.srv.Store().UserStorageUsed(ctx, userIDOf(t, e, run.Name))
	if err != nil || used.Checkpoints != 4096 {
		t.Fatalf("storage used by checkpoints: %+v, %v", used, err)
	}
}

func userIDOf(t *testing.T, e *apiEnv, run string) string {
	t.Helper()
	r, err := e.srv.Store().RunGet(context.Background(), store.RunGetParams{Name: run})
	if err != nil {
		t.Fatal(err)
	}
	return r.UserID
}
