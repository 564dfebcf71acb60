package server_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"github.com/dstackai/dstack/internal/testutil"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/client"
	"github.com/dstackai/dstack/server"
	"github.com/dstackai/dstack/server/servertest"
	"github.com/dstackai/dstack/store"
)

// dataFiles lists the files under the server's blobs and logs, relative
// and slash-separated, with their sizes.
func dataFiles(t *testing.T, srv *servertest.Server) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for _, sub := range []string{"blobs", "logs"} {
		root := filepath.Join(srv.DataDir, sub)
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			info, err := d.Info()
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(srv.DataDir, p)
			out[filepath.ToSlash(rel)] = info.Size()
			return nil
		})
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
	}
	return out
}

func totalSize(files map[string]int64) int64 {
	var n int64
	for _, v := range files {
		n += v
	}
	return n
}

// member adds a member straight to the store and returns a client with
// its token, the token and the user's ID.
func member(t *testing.T, srv *servertest.Server, name string) (*client.Client, string, string) {
	t.Helper()
	token := "dstu_" + randomHex(t)
	sum := sha256.Sum256([]byte(token))
	id := randomHex(t)[:16]
	_, err := srv.Store().UserCreate(context.Background(), store.UserCreateParams{
		ID: id, Name: name, TokenHash: hex.EncodeToString(sum[:]), Now: time.Now(),
	})
	if err != nil {
		t.Fatalf("create user %s: %v", name, err)
	}
	return srv.Client().WithToken(token), token, id
}

// finishedRun runs one job of c's to done on runner rc, with an artifact
// file and some log output, and returns the run.
func (e *apiEnv) finishedRun(t *testing.T, c, rc *client.Client, codeID string) *api.Run {
	t.Helper()
	ctx := context.Background()
	job := api.JobSpec{Workflow: "prepare", Provider: "bash", Commands: []string{"true"}, Artifacts: []string{"data"}}
	run, err := c.RunSubmit(ctx, api.RunSubmitRequest{Workflow: "prepare", CodeID: codeID, Jobs: []api.JobSpec{job}})
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	a := claim(t, rc)
	if _, err := rc.JobLogAppend(ctx, a.Job.ID, a.Lease, 0, []byte(strings.Repeat("log line\n", 100))); err != nil {
		t.Fatalf("log: %v", err)
	}
	content := strings.Repeat("x", 5000)
	if err := rc.JobArtifactUpload(ctx, a.Job.ID, a.Lease, "data/out.txt", strings.NewReader(content), int64(len(content))); err != nil {
		t.Fatalf("upload: %v", err)
	}
	setStatus(t, rc, a, api.StatusDone)
	return run
}

func TestCodeOfAnotherUserIsRefusedAsUnknown(t *testing.T) {
	t.Parallel()
	e := setup(t)
	bob, bobToken, _ := member(t, e.srv, "bob")
	submit := func(codeID string) reply {
		return do(t, e.srv.URL, req{method: http.MethodPost, path: "/api/v1/runs", token: bobToken,
			body: `{"workflow":"w","code_id":"` + codeID + `","jobs":[{"workflow":"w","provider":"bash","commands":["true"]}]}`})
	}
	unknown := strings.Repeat("ab", 32)
	mine, theirs := submit(unknown), submit(e.codeID)
	if theirs.status != mine.status || theirs.status != http.StatusBadRequest ||
		strings.ReplaceAll(string(theirs.body), e.codeID, unknown) != string(mine.body) {
		t.Fatalf("another user's code: %d %s\nan unknown code: %d %s\nwant the same answer", theirs.status, theirs.body, mine.status, mine.body)
	}
	runs, err := bob.RunList(context.Background(), true)
	if err != nil || len(runs) != 0 {
		t.Fatalf("bob's runs = %v, %v; want none", runs, err)
	}
	// Uploading the same bytes makes them his too.
	if got := uploadCode(t, bob); got != e.codeID {
		t.Fatalf("bob's upload of the same archive = %s, want %s", got, e.codeID)
	}
	if r := submit(e.codeID); r.status != http.StatusCreated {
		t.Fatalf("bob's run with his upload: %d %s", r.status, r.body)
	}
}

// quotaServer is a server whose users have a default quota of quota bytes.
func quotaServer(t *testing.T, quota int64, opts ...servertest.Option) *apiEnv {
	t.Helper()
	srv := servertest.Start(t, append(opts, servertest.WithConfig(func(c *server.Config) { c.StorageQuota = quota }))...)
	return &apiEnv{srv: srv, admin: srv.Client()}
}

func wantQuotaError(t *testing.T, what string, err error, used, quota string) {
	t.Helper()
	var ae *api.Error
	want := "storage quota exceeded: " + used + " used of " + quota + "; delete runs with `dstack rm` or ask an admin to raise it"
	if !errors.As(err, &ae) || ae.Status != http.StatusInsufficientStorage || ae.Code != api.CodeQuotaExceeded || ae.Message != want {
		t.Fatalf("%s: %v, want 507 %s %q", what, err, api.CodeQuotaExceeded, want)
	}
}

func TestQuotaRefusesUploadsAndRunsAndStoresNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := quotaServer(t, 2048)
	alice, _, aliceID := member(t, e.srv, "alice")
	big := bytes.Repeat([]byte{0x1f}, 3000) // not an archive, but a code upload is not unpacked
	_, err := alice.CodeUpload(ctx, bytes.NewReader(big))
	wantQuotaError(t, "code upload over the quota", err, "0 B", "2 KiB")
	if files := dataFiles(t, e.srv); len(files) != 0 {
		t.Errorf("files stored by a refused upload: %v", files)
	}
	if u, err := e.srv.Store().UserStorageUsed(ctx, aliceID); err != nil || u.Total() != 0 {
		t.Errorf("usage after a refused upload = %+v, %v; want none", u, err)
	}

	// Under the quota the upload goes; a run is accepted while under it.
	e.codeID = uploadCode(t, alice)
	rc := registerRunner(t, alice, "r1")
	a := e.submit(t, alice, bashJob("a"))
	claimed := claim(t, rc)
	if claimed.Job.RunName != a.Name {
		t.Fatalf("claimed %s", claimed.Job.RunName)
	}
	// An artifact that would go over is refused, and not stored.
	err = rc.JobArtifactUpload(ctx, claimed.Job.ID, claimed.Lease, "data/big", bytes.NewReader(big), int64(len(big)))
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.CodeQuotaExceeded {
		t.Fatalf("artifact over the quota: %v, want 507 quota_exceeded", err)
	}
	for f := range dataFiles(t, e.srv) {
		if strings.HasPrefix(f, "blobs/artifacts/") {
			t.Errorf("refused artifact stored: %s", f)
		}
	}
	if recs, _ := e.srv.Store().ArtifactList(ctx, store.ArtifactListParams{JobID: claimed.Job.ID}); len(recs) != 0 {
		t.Errorf("refused artifact recorded: %+v", recs)
	}
	// So is a log chunk that would go over.
	_, err = rc.JobLogAppend(ctx, claimed.Job.ID, claimed.Lease, 0, big)
	if !errors.As(err, &ae) || ae.Code != api.CodeQuotaExceeded {
		t.Fatalf("log over the quota: %v, want 507 quota_exceeded", err)
	}
	if jobLog(t, alice, claimed.Job.ID) != "" {
		t.Error("a refused log chunk was stored")
	}

	// At the quota, a run is refused and nothing is recorded.
	small := bytes.Repeat([]byte{0x1f}, 2048-int(mustUsage(t, e.srv, aliceID)))
	if _, err := alice.CodeUpload(ctx, bytes.NewReader(small)); err != nil {
		t.Fatalf("upload up to the quota: %v", err)
	}
	_, err = alice.RunSubmit(ctx, api.RunSubmitRequest{Workflow: "b", CodeID: e.codeID, Jobs: []api.JobSpec{bashJob("b")}})
	wantQuotaError(t, "run at the quota", err, "2 KiB", "2 KiB")
	if runs, _ := alice.RunList(ctx, true); len(runs) != 1 {
		t.Errorf("alice has %d runs, want the first only", len(runs))
	}

	// An admin raises her quota (the server's method for `users set`).
	q := int64(1 << 20)
	if err := e.srv.SetUserStorageQuota(ctx, aliceID, &q); err != nil {
		t.Fatal(err)
	}
	e.submit(t, alice, bashJob("b"))
	neg := int64(-1)
	if err := e.srv.SetUserStorageQuota(ctx, aliceID, &neg); err == nil {
		t.Error("a negative quota was accepted")
	}
	if err := e.srv.SetUserStorageQuota(ctx, "nobody", &q); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("quota of an unknown user: %v, want ErrNotFound", err)
	}
	used, err := e.srv.UserStorageUsed(ctx)
	if err != nil || used[aliceID] == nil || used[aliceID].Total() != 2048 {
		t.Errorf("UserStorageUsed = %v, %v; want alice at 2048 bytes", used, err)
	}
}

func mustUsage(t *testing.T, srv *servertest.Server, userID string) int64 {
	t.Helper()
	u, err := srv.Store().UserStorageUsed(context.Background(), userID)
	if err != nil {
		t.Fatal(err)
	}
	return u.Total()
}

func TestDeleteRunFreesItsBytes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := setup(t)
	alice, aliceToken, aliceID := member(t, e.srv, "alice")
	_, bobToken, _ := member(t, e.srv, "bob")
	codeID := uploadCode(t, alice)
	rc := registerRunner(t, alice, "r1")
	before := dataFiles(t, e.srv) // the admin's code archive, the same bytes as alice's

	// A running run is refused.
	job := bashJob("long")
	running, err := alice.RunSubmit(ctx, api.RunSubmitRequest{Workflow: "long", CodeID: codeID, Jobs: []api.JobSpec{job}})
	if err != nil {
		t.Fatal(err)
	}
	a := claim(t, rc)
	r := do(t, e.srv.URL, req{method: http.MethodDelete, path: "/api/v1/runs/" + running.Name, token: aliceToken})
	if r.status != http.StatusConflict || !strings.Contains(string(r.body), "stop it first with `dstack stop "+running.Name+"`") {
		t.Fatalf("deleting a running run: %d %s", r.status, r.body)
	}
	setStatus(t, rc, a, api.StatusDone)

	run := e.finishedRun(t, alice, rc, codeID)
	if mustUsage(t, e.srv, aliceID) <= 5000 {
		t.Errorf("alice's usage = %d, want her log, artifact and code counted", mustUsage(t, e.srv, aliceID))
	}
	// Another member's run is not found, as an unknown one.
	theirs := do(t, e.srv.URL, req{method: http.MethodDelete, path: "/api/v1/runs/" + run.Name, token: bobToken})
	unknown := do(t, e.srv.URL, req{method: http.MethodDelete, path: "/api/v1/runs/no-such-run", token: bobToken})
	if theirs.status != http.StatusNotFound || strings.ReplaceAll(string(theirs.body), run.Name, "no-such-run") != string(unknown.body) {
		t.Fatalf("another member's run: %d %s; unknown: %d %s", theirs.status, theirs.body, unknown.status, unknown.body)
	}
	// A tagged run is refused without force.
	if _, err := alice.TagPut(ctx, "keep", run.Name, false); err != nil {
		t.Fatal(err)
	}
	_, err = alice.RunDelete(ctx, run.Name, false)
	if !client.IsCode(err, api.CodeConflict) || !strings.Contains(err.Error(), "dstack rm -f "+run.Name) {
		t.Fatalf("deleting a tagged run: %v", err)
	}
	withRuns := dataFiles(t, e.srv)
	res, err := alice.RunDelete(ctx, run.Name, true)
	if err != nil {
		t.Fatalf("rm -f: %v", err)
	}
	if tags, err := alice.TagList(ctx); err != nil || len(tags) != 0 {
		t.Errorf("tags after the tagged run went: %+v, %v; want none", tags, err)
	}
	after := dataFiles(t, e.srv)
	if freed := totalSize(withRuns) - totalSize(after); freed != res.FreedBytes || freed < 5000 {
		t.Errorf("rm freed %d bytes on disk, says %d; want its log and artifact", freed, res.FreedBytes)
	}
	// The admin deletes the other finished run; alice's code goes with her
	// last run, its bytes stay while the admin holds the same archive.
	if _, err := e.admin.RunDelete(ctx, running.Name, false); err != nil {
		t.Fatalf("admin deleting a member's run: %v", err)
	}
	if got := dataFiles(t, e.srv); totalSize(got) != totalSize(before) {
		t.Errorf("files left: %v, want those before the runs: %v", got, before)
	}
	if _, err := e.srv.Store().CodeGet(ctx, store.CodeGetParams{UserID: aliceID, CodeID: codeID}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("alice's code after her last run went: %v, want deleted", err)
	}
	if u := mustUsage(t, e.srv, aliceID); u != 0 {
		t.Errorf("alice's usage after deleting her runs = %d, want 0", u)
	}
	if _, err := alice.RunGet(ctx, run.Name); !client.IsCode(err, api.CodeNotFound) {
		t.Errorf("deleted run: %v, want not found", err)
	}
}

func TestRetentionDeletesOldRunsAndUnusedCode(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clock := testutil.NewClock(time.Now())
	e := setup(t, withClock(clock), servertest.WithConfig(func(c *server.Config) { c.Retention = 24 * time.Hour }))
	rc := registerRunner(t, e.admin, "r1")
	old := e.finishedRun(t, e.admin, rc, e.codeID)
	if _, err := e.admin.TagPut(ctx, "keep", old.Name, false); err != nil {
		t.Fatal(err)
	}
	gone := e.finishedRun(t, e.admin, rc, e.codeID)
	withRuns := totalSize(dataFiles(t, e.srv))
	// The audit log is kept as long as the runs: the entry of a user added
	// now goes with the old runs, that of one added a day later stays.
	if _, err := e.admin.UserCreate(ctx, api.UserCreateRequest{Name: "before"}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(25 * time.Hour)
	if _, err := e.admin.UserCreate(ctx, api.UserCreateRequest{Name: "after"}); err != nil {
		t.Fatal(err)
	}
	recent := e.finishedRun(t, e.admin, rc, e.codeID)
	unused, err := e.admin.CodeUpload(ctx, bytes.NewReader(codeArchive(t, map[string]string{"other": "x"})))
	if err != nil {
		t.Fatal(err)
	}
	server.RetentionPass(e.srv.Server)
	for name, want := range map[string]bool{old.Name: true, gone.Name: false, recent.Name: true} {
		_, err := e.admin.RunGet(ctx, name)
		if kept := err == nil; kept != want {
			t.Errorf("run %s kept %v, want %v (%v)", name, kept, want, err)
		}
	}
	entries, err := e.admin.AuditList(ctx, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	var targets []string
	for _, en := range entries {
		targets = append(targets, en.Target)
	}
	if !slices.Contains(targets, "after") || slices.Contains(targets, "before") {
		t.Errorf("audit entries after the retention are of %q; want the recent user's kept and the old one's deleted", targets)
	}
	if now := totalSize(dataFiles(t, e.srv)); now >= withRuns+int64(len("log line\n")*100) {
		t.Errorf("data after the retention: %d bytes, before the recent run: %d; want the old run's freed", now, withRuns)
	}
	if _, ok := dataFiles(t, e.srv)["blobs/code/"+unused.CodeID+".tar.gz"]; !ok {
		t.Fatal("a code archive uploaded a moment ago was deleted")
	}
	clock.Advance(2 * time.Hour)
	server.RetentionPass(e.srv.Server)
	files := dataFiles(t, e.srv)
	if _, ok := files["blobs/code/"+unused.CodeID+".tar.gz"]; ok {
		t.Error("a code archive unused for two hours is kept")
	}
	if _, ok := files["blobs/code/"+e.codeID+".tar.gz"]; !ok {
		t.Error("the code archive of kept runs was deleted")
	}
	for f := range files {
		if strings.Contains(f, gone.Jobs[0].ID) {
			t.Errorf("file of the deleted run left: %s", f)
		}
	}
	if _, err := os.Stat(filepath.Join(e.srv.DataDir, "blobs", "artifacts", gone.Jobs[0].ID)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the deleted job's artifact directory: %v, want gone", err)
	}
}
