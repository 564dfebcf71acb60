package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/client"
	"github.com/dstackai/dstack/internal/secretbox"
	"github.com/dstackai/dstack/internal/testutil"
	"github.com/dstackai/dstack/server"
	"github.com/dstackai/dstack/server/servertest"
)

// runBody is the JSON of a run submission.
func runBody(t *testing.T, workflow, codeID string, jobs ...api.JobSpec) string {
	t.Helper()
	b, err := json.Marshal(api.RunSubmitRequest{Workflow: workflow, CodeID: codeID, Jobs: jobs})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestSubmitRefusesBadRuns(t *testing.T) {
	t.Parallel()
	e := setup(t)
	code := e.codeID
	withArtifact := bashJob("a")
	withArtifact.Artifacts = []string{"../outside"}
	negative := bashJob("a")
	negative.Resources.CPU = -1
	noCommands := bashJob("a")
	noCommands.Commands = nil
	perl := bashJob("a")
	perl.Provider = "perl"
	docker := bashJob("a")
	docker.Provider = "docker"
	badName := bashJob("a b")
	for _, tc := range []struct {
		name string
		body string
		want []string // in the message
	}{
		{"dependency cycle", runBody(t, "a", code, bashJob("a", "b"), bashJob("b", "c"), bashJob("c", "a")), []string{"dependency cycle", "a -> b -> c -> a"}},
		{"self dependency", runBody(t, "a", code, bashJob("a", "a")), []string{"dependency cycle"}},
		{"unknown dependency", runBody(t, "a", code, bashJob("a", "prepare")), []string{`"prepare"`, "not in the run"}},
		{"unknown provider", runBody(t, "a", code, perl), []string{`unknown provider "perl"`, "bash, docker or python"}},
		{"no commands", runBody(t, "a", code, noCommands), []string{`"a" has no commands`}},
		{"docker without image", runBody(t, "a", code, docker), []string{"needs an image"}},
		{"duplicate workflow", runBody(t, "a", code, bashJob("a"), bashJob("a")), []string{"appears twice"}},
		{"bad workflow name", runBody(t, "a b", code, badName), []string{`"a b"`}},
		{"workflow not among jobs", runBody(t, "z", code, bashJob("a")), []string{`"z"`, "not among its jobs"}},
		{"no jobs", runBody(t, "a", code), []string{"at least one job"}},
		{"artifact outside the working directory", runBody(t, "a", code, withArtifact), []string{`"../outside"`}},
		{"negative resources", runBody(t, "a", code, negative), []string{"negative"}},
		{"unknown code id", runBody(t, "a", strings.Repeat("ab", 32), bashJob("a")), []string{"no code archive", "upload it first"}},
		{"malformed code id", runBody(t, "a", "../../etc/passwd", bashJob("a")), []string{"not a code archive id", "upload the code first"}},
		{"malformed JSON", `{"workflow": "a", "jobs": [`, []string{"not valid JSON"}},
		{"unknown field", `{"workflow": "a", "code_id": "` + code + `", "jobs": [], "priority": 1}`, []string{`unknown field "priority"`}},
		{"wrong type", `{"workflow": 1}`, []string{"not valid JSON"}},
		{"empty body", ``, []string{"empty"}},
	} {
		rp := do(t, e.srv.URL, req{method: http.MethodPost, path: "/api/v1/runs", token: e.srv.AdminToken, body: tc.body})
		wantError(t, tc.name, rp, http.StatusBadRequest, api.CodeInvalid, tc.want...)
	}
	// A body over the limit is refused as such, not as broken JSON.
	huge := bashJob("a")
	huge.Env = map[string]string{"BIG": strings.Repeat("x", 5<<20)}
	rp := do(t, e.srv.URL, req{method: http.MethodPost, path: "/api/v1/runs", token: e.srv.AdminToken, body: runBody(t, "a", code, huge)})
	wantError(t, "oversized run", rp, http.StatusRequestEntityTooLarge, api.CodeTooLarge, "MiB")

	runs, err := e.admin.RunList(context.Background(), true)
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != 0 {
		t.Errorf("refused submissions created runs: %+v", runs)
	}
	// The same server takes a good run.
	run := e.submit(t, e.admin, bashJob("prepare"), bashJob("train", "prepare"))
	if run.Status != api.StatusPending || len(run.Jobs) != 2 || run.Jobs[0].Workflow != "prepare" || run.Jobs[1].Status != api.StatusSubmitted {
		t.Errorf("good run = %+v; want pending, prepare then train waiting for it", run)
	}
}

// files lists the regular files under dir whose names match pattern.
func files(t *testing.T, dir, pattern string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if ok, _ := filepath.Match(pattern, d.Name()); ok && !d.IsDir() {
			out = append(out, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestOversizedCodeUploadIsRefusedAndLeavesNothing(t *testing.T) {
	t.Parallel()
	const limit = 64 << 10
	srv := servertest.Start(t, servertest.WithConfig(func(c *server.Config) { c.MaxCodeSize = limit }))
	body := strings.Repeat("x", limit+1)
	for _, chunked := range []bool{false, true} {
		rp := do(t, srv.URL, req{method: http.MethodPost, path: "/api/v1/code", token: srv.AdminToken, body: body, chunked: chunked})
		wantError(t, fmt.Sprintf("code upload over the limit (chunked %v)", chunked), rp, http.StatusRequestEntityTooLarge, api.CodeTooLarge,
			fmt.Sprintf("limit of %d bytes", limit), ".dstackignore", "--max-code-size")
	}
	if got := files(t, srv.DataDir, "*"); len(filterOut(filterOut(filterOut(got, "dstack.db"), secretbox.KeyFile), "replica.id")) != 0 {
		t.Errorf("refused uploads left files behind: %q", got)
	}
	// Exactly the limit is fine, and empty is not.
	up, err := srv.Client().CodeUpload(context.Background(), strings.NewReader(body[:limit]))
	if err != nil || up.Size != limit {
		t.Fatalf("upload of exactly the limit = %+v, %v", up, err)
	}
	rp := do(t, srv.URL, req{method: http.MethodPost, path: "/api/v1/code", token: srv.AdminToken})
	wantError(t, "empty code upload", rp, http.StatusBadRequest, api.CodeInvalid, "empty")
}

// filterOut drops the paths whose base name starts with prefix.
func filterOut(paths []string, prefix string) []string {
	var out []string
	for _, p := range paths {
		if !strings.HasPrefix(filepath.Base(p), prefix) {
			out = append(out, p)
		}
	}
	return out
}

func TestCodeUploadIsContentAddressed(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	archive := codeArchive(t, map[string]string{"train.py": "print('hi')\n"})
	a, err := e.admin.CodeUpload(ctx, bytes.NewReader(archive))
	if err != nil {
		t.Fatal(err)
	}
	b, err := e.admin.CodeUpload(ctx, bytes.NewReader(archive))
	if err != nil {
		t.Fatal(err)
	}
	if a.CodeID != b.CodeID || a.Size != int64(len(archive)) {
		t.Errorf("uploads of one archive = %+v and %+v; want one id and its size", a, b)
	}
	// A runner gets exactly those bytes for a job of that code.
	run, err := e.admin.RunSubmit(ctx, api.RunSubmitRequest{Workflow: "w", CodeID: a.CodeID, Jobs: []api.JobSpec{bashJob("w")}})
	if err != nil {
		t.Fatal(err)
	}
	rc := registerRunner(t, e.admin, "r")
	as := claim(t, rc)
	if as.Job.ID != run.Jobs[0].ID {
		t.Fatalf("claimed %s, want %s", as.Job.ID, run.Jobs[0].ID)
	}
	body, err := rc.JobCode(ctx, as.Job.ID, as.Lease)
	if err != nil {
		t.Fatal(err)
	}
	if got := bytesOf(t, body); !bytes.Equal(got, archive) {
		t.Errorf("runner got %d bytes of code, want the %d uploaded", len(got), len(archive))
	}
}

func TestLogAppendIsIdempotentAndGapsAreRefused(t *testing.T) {
	t.Parallel()
	eachLogStore(t, testLogAppendIsIdempotentAndGapsAreRefused)
}

func testLogAppendIsIdempotentAndGapsAreRefused(t *testing.T, logs servertest.Option) {
	e := setup(t, logs)
	ctx := context.Background()
	run := e.submit(t, e.admin, bashJob("train"))
	token := registerRunnerToken(t, e.admin, "r")
	rc := e.admin.WithToken(token)
	a := claim(t, rc)
	for _, step := range []struct {
		offset   int64
		data     string
		wantSize int64
	}{
		{0, "line 1\n", 7},
		{0, "line 1\n", 7},          // a retry after a lost answer
		{0, "line 1\nline 2\n", 14}, // a retry that carries more
		{7, "line 2\n", 14},
		{14, "", 14}, // an empty append tells the size
	} {
		size, err := rc.JobLogAppend(ctx, a.Job.ID, a.Lease, step.offset, []byte(step.data))
		if err != nil || size != step.wantSize {
			t.Errorf("append %q at %d = %d, %v; want size %d", step.data, step.offset, size, err, step.wantSize)
		}
	}
	rp := do(t, e.srv.URL, withLease(req{method: http.MethodPost, path: "/api/v1/runner/jobs/" + a.Job.ID + "/logs?offset=100", body: "lost\n"}, token, a.Lease))
	wantError(t, "append past the end", rp, http.StatusConflict, api.CodeConflict, "resend from", "14")
	for _, bad := range []string{"", "-1", "x"} {
		rp := do(t, e.srv.URL, withLease(req{method: http.MethodPost, path: "/api/v1/runner/jobs/" + a.Job.ID + "/logs?offset=" + bad, body: "x"}, token, a.Lease))
		wantError(t, fmt.Sprintf("append at offset %q", bad), rp, http.StatusBadRequest, api.CodeInvalid, "offset")
	}
	if got := jobLog(t, e.admin, run.Jobs[0].ID); got != "line 1\nline 2\n" {
		t.Errorf("log = %q, want each line once", got)
	}
	// Offset reads resume a log.
	r, err := e.admin.JobLogs(ctx, a.Job.ID, client.LogOptions{Offset: 7})
	if err != nil {
		t.Fatal(err)
	}
	if got := string(bytesOf(t, r)); got != "line 2\n" {
		t.Errorf("log from offset 7 = %q", got)
	}
}

// follower reads a followed log in the background.
type follower struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	done chan error
}

func follow(t *testing.T, c *client.Client, jobID string, o client.LogOptions) *follower {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	o.Follow = true
	body, err := c.JobLogs(ctx, jobID, o)
	if err != nil {
		t.Fatalf("follow logs: %v", err)
	}
	f := &follower{done: make(chan error, 1)}
	go func() {
		defer body.Close()
		buf := make([]byte, 4096)
		for {
			n, err := body.Read(buf)
			f.mu.Lock()
			f.buf.Write(buf[:n])
			f.mu.Unlock()
			if err == io.EOF {
				f.done <- nil
				return
			}
			if err != nil {
				f.done <- err
				return
			}
		}
	}()
	return f
}

func (f *follower) String() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.buf.String()
}

func (f *follower) ended() bool {
	select {
	case err := <-f.done:
		f.done <- err
		return true
	default:
		return false
	}
}

func TestFollowingLogsSeesNewOutputAndEndsWithTheJob(t *testing.T) {
	t.Parallel()
	eachLogStore(t, testFollowingLogsSeesNewOutputAndEndsWithTheJob)
}

func testFollowingLogsSeesNewOutputAndEndsWithTheJob(t *testing.T, logs servertest.Option) {
	e := setup(t, logs)
	ctx := context.Background()
	run := e.submit(t, e.admin, bashJob("train"))
	// A follower that starts before the job does.
	early := follow(t, e.admin, run.Jobs[0].ID, client.LogOptions{})
	rc := registerRunner(t, e.admin, "r")
	a := claim(t, rc)
	setStatus(t, rc, a, api.StatusRunning)
	if _, err := rc.JobLogAppend(ctx, a.Job.ID, a.Lease, 0, []byte("epoch 1\n")); err != nil {
		t.Fatal(err)
	}
	late := follow(t, e.admin, a.Job.ID, client.LogOptions{})
	for name, f := range map[string]*follower{"early": early, "late": late} {
		testutil.Eventually(t, name+" follower to see the first line", func() bool { return f.String() == "epoch 1\n" })
	}
	if _, err := rc.JobLogAppend(ctx, a.Job.ID, a.Lease, 8, []byte("epoch 2\n")); err != nil {
		t.Fatal(err)
	}
	for name, f := range map[string]*follower{"early": early, "late": late} {
		testutil.Eventually(t, name+" follower to see the line appended later", func() bool { return f.String() == "epoch 1\nepoch 2\n" })
		if f.ended() {
			t.Fatalf("%s follower ended while the job runs", name)
		}
	}
	if _, err := rc.JobLogAppend(ctx, a.Job.ID, a.Lease, 16, []byte("saved model\n")); err != nil {
		t.Fatal(err)
	}
	setStatus(t, rc, a, api.StatusDone)
	for name, f := range map[string]*follower{"early": early, "late": late} {
		testutil.Eventually(t, name+" follower to end with the job", f.ended)
		if err := <-f.done; err != nil {
			t.Errorf("%s follower: %v", name, err)
		}
		if got := f.String(); got != "epoch 1\nepoch 2\nsaved model\n" {
			t.Errorf("%s follower read %q, want the whole log", name, got)
		}
	}
	// Following a finished job returns its log at once.
	done := follow(t, e.admin, a.Job.ID, client.LogOptions{})
	testutil.Eventually(t, "a follower of a finished job to end", done.ended)
	if got := done.String(); got != "epoch 1\nepoch 2\nsaved model\n" {
		t.Errorf("follower of a finished job read %q", got)
	}
}

func TestLogsSince(t *testing.T) {
	t.Parallel()
	eachLogStore(t, testLogsSince)
}

func testLogsSince(t *testing.T, logs servertest.Option) {
	clock := testutil.NewClock(time.Now())
	e := setup(t, withClock(clock), logs)
	ctx := context.Background()
	e.submit(t, e.admin, bashJob("train"))
	rc := registerRunner(t, e.admin, "r")
	a := claim(t, rc)
	start := clock.Now()
	if _, err := rc.JobLogAppend(ctx, a.Job.ID, a.Lease, 0, []byte("old\n")); err != nil {
		t.Fatal(err)
	}
	clock.Advance(10 * time.Minute)
	if _, err := rc.JobLogAppend(ctx, a.Job.ID, a.Lease, 4, []byte("new\n")); err != nil {
		t.Fatal(err)
	}
	r, err := e.admin.JobLogs(ctx, a.Job.ID, client.LogOptions{Since: start.Add(5 * time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	if got := string(bytesOf(t, r)); got != "new\n" {
		t.Errorf("logs since 5 minutes in = %q, want only the later output", got)
	}
	rp := do(t, e.srv.URL, req{method: http.MethodGet, path: "/api/v1/jobs/" + a.Job.ID + "/logs?since=yesterday", token: e.srv.AdminToken})
	wantError(t, "logs since a non-time", rp, http.StatusBadRequest, api.CodeInvalid, "RFC 3339")
	rp = do(t, e.srv.URL, req{method: http.MethodGet, path: "/api/v1/jobs/nope/logs", token: e.srv.AdminToken})
	wantError(t, "logs of no job", rp, http.StatusNotFound, api.CodeNotFound)
}

func TestRestartKeepsRunsLogsAndArtifacts(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	run := e.submit(t, e.admin, api.JobSpec{Workflow: "train", Provider: "bash", Commands: []string{"true"}, Artifacts: []string{"model"}})
	token := registerRunnerToken(t, e.admin, "r")
	rc := e.admin.WithToken(token)
	a := claim(t, rc)
	setStatus(t, rc, a, api.StatusRunning)
	if _, err := rc.JobLogAppend(ctx, a.Job.ID, a.Lease, 0, []byte("before\n")); err != nil {
		t.Fatal(err)
	}
	weights := bytes.Repeat([]byte("w"), 1000)
	if err := rc.JobArtifactUpload(ctx, a.Job.ID, a.Lease, "model/weights.bin", bytes.NewReader(weights), int64(len(weights))); err != nil {
		t.Fatal(err)
	}

	e.srv.Restart(t)
	rc, err := client.New(e.srv.URL, token)
	if err != nil {
		t.Fatal(err)
	}
	// The runner's credential and lease still hold; the log carries on
	// where it was, retries included.
	for _, step := range []struct {
		offset int64
		data   string
		want   int64
	}{{0, "before\n", 7}, {7, "after\n", 13}} {
		if size, err := rc.JobLogAppend(ctx, a.Job.ID, a.Lease, step.offset, []byte(step.data)); err != nil || size != step.want {
			t.Fatalf("append %q at %d after restart = %d, %v; want %d", step.data, step.offset, size, err, step.want)
		}
	}
	_, err = rc.JobLogAppend(ctx, a.Job.ID, a.Lease, 50, []byte("gap"))
	wantAPIError(t, "append past the end after restart", err, http.StatusConflict, api.CodeConflict)
	setStatus(t, rc, a, api.StatusDone)

	e.srv.Restart(t)
	admin := e.srv.Client()
	got, err := admin.RunGet(ctx, run.Name)
	if err != nil || got.Status != api.StatusDone {
		t.Fatalf("run after restart = %+v, %v; want done", got, err)
	}
	if log := jobLog(t, admin, a.Job.ID); log != "before\nafter\n" {
		t.Errorf("log after restart = %q", log)
	}
	f := follow(t, admin, a.Job.ID, client.LogOptions{})
	testutil.Eventually(t, "a follower of a job finished before the restart to end", f.ended)
	if f.String() != "before\nafter\n" {
		t.Errorf("follower after restart read %q", f.String())
	}
	fs, err := admin.ArtifactList(ctx, run.Name)
	if err != nil || len(fs) != 1 || fs[0].Path != "model/weights.bin" || fs[0].Size != 1000 {
		t.Fatalf("artifacts after restart = %+v, %v", fs, err)
	}
	body, _, err := admin.ArtifactDownload(ctx, a.Job.ID, "model/weights.bin", 0)
	if err != nil {
		t.Fatal(err)
	}
	if b := bytesOf(t, body); !bytes.Equal(b, weights) {
		t.Errorf("artifact after restart has %d bytes, want the %d uploaded", len(b), len(weights))
	}
}

func TestArtifactsUploadListDownloadAndResume(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	prepare := api.JobSpec{Workflow: "prepare", Provider: "bash", Commands: []string{"true"}, Artifacts: []string{"data"}}
	run := e.submit(t, e.admin, prepare, bashJob("train", "prepare"))
	rc := registerRunner(t, e.admin, "r")
	a := claim(t, rc)
	if a.Job.Workflow != "prepare" {
		t.Fatalf("claimed %s first, want prepare (train waits for it)", a.Job.Workflow)
	}
	big := make([]byte, 300_000)
	for i := range big {
		big[i] = byte(i * 7)
	}
	uploads := map[string][]byte{
		"data/big.bin":           big,
		"data/sub dir/notes.txt": []byte("hello\n"),
		"data/50% done?#1.txt":   []byte("odd name"),
		"data/résumé.txt":        []byte("unicode"),
		"data/empty":             nil,
	}
	for p, b := range uploads {
		if err := rc.JobArtifactUpload(ctx, a.Job.ID, a.Lease, p, bytes.NewReader(b), int64(len(b))); err != nil {
			t.Fatalf("upload %s: %v", p, err)
		}
	}
	list, err := e.admin.ArtifactList(ctx, run.Name)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != len(uploads) {
		t.Fatalf("artifact list = %+v, want %d files", list, len(uploads))
	}
	for _, f := range list {
		if b, ok := uploads[f.Path]; !ok || f.Size != int64(len(b)) || f.JobID != a.Job.ID || f.Workflow != "prepare" {
			t.Errorf("listed %+v, which was not uploaded so", f)
		}
	}
	for p, b := range uploads {
		body, n, err := e.admin.ArtifactDownload(ctx, a.Job.ID, p, 0)
		if err != nil {
			t.Fatalf("download %s: %v", p, err)
		}
		if got := bytesOf(t, body); !bytes.Equal(got, b) || n != int64(len(b)) {
			t.Errorf("download %s = %d bytes (length %d), want %d", p, len(got), n, len(b))
		}
	}
	// A broken-off download resumes from where it stopped.
	const at = 123_456
	body, n, err := e.admin.ArtifactDownload(ctx, a.Job.ID, "data/big.bin", at)
	if err != nil {
		t.Fatal(err)
	}
	if got := bytesOf(t, body); !bytes.Equal(got, big[at:]) || n != int64(len(big)-at) {
		t.Errorf("resumed download = %d bytes (length %d), want the last %d", len(got), n, len(big)-at)
	}
	rp := do(t, e.srv.URL, req{method: http.MethodGet, path: "/api/v1/jobs/" + a.Job.ID + "/artifacts/data/big.bin", token: e.srv.AdminToken, header: map[string]string{"Range": "bytes=" + strconv.Itoa(at) + "-"}})
	if rp.status != http.StatusPartialContent || rp.header.Get("Content-Range") != fmt.Sprintf("bytes %d-%d/%d", at, len(big)-1, len(big)) {
		t.Errorf("ranged download: %d, Content-Range %q; want 206 and bytes %d-%d/%d", rp.status, rp.header.Get("Content-Range"), at, len(big)-1, len(big))
	}
	rp = do(t, e.srv.URL, req{method: http.MethodGet, path: "/api/v1/jobs/" + a.Job.ID + "/artifacts/data/big.bin", token: e.srv.AdminToken, header: map[string]string{"Range": "bytes=400000-"}})
	wantError(t, "range past the end", rp, http.StatusRequestedRangeNotSatisfiable, api.CodeInvalid, "past the end")
	rp = do(t, e.srv.URL, req{method: http.MethodGet, path: "/api/v1/jobs/" + a.Job.ID + "/artifacts/data/missing", token: e.srv.AdminToken})
	wantError(t, "missing artifact", rp, http.StatusNotFound, api.CodeNotFound, "data/missing")

	// The dependent job gets the artifacts of the job it depends on.
	setStatus(t, rc, a, api.StatusDone)
	b := claim(t, rc)
	if b.Job.Workflow != "train" {
		t.Fatalf("claimed %s, want train", b.Job.Workflow)
	}
	deps, err := rc.JobDependencies(ctx, b.Job.ID, b.Lease)
	if err != nil {
		t.Fatal(err)
	}
	if len(deps) != 1 || deps[0].Workflow != "prepare" || deps[0].JobID != a.Job.ID || len(deps[0].Files) != len(uploads) {
		t.Fatalf("dependencies = %+v, want prepare with its %d files", deps, len(uploads))
	}
	dep, err := rc.JobDependencyArtifact(ctx, b.Job.ID, b.Lease, a.Job.ID, "data/big.bin")
	if err != nil {
		t.Fatal(err)
	}
	if got := bytesOf(t, dep); !bytes.Equal(got, big) {
		t.Errorf("dependency artifact = %d bytes, want %d", len(got), len(big))
	}
	_, err = rc.JobDependencyArtifact(ctx, b.Job.ID, b.Lease, b.Job.ID, "data/big.bin")
	wantAPIError(t, "a job's own artifacts through the dependency route", err, http.StatusNotFound, api.CodeNotFound)

	// Another user sees none of it.
	bob := newUser(t, e.srv, "bob")
	_, err = bob.ArtifactList(ctx, run.Name)
	wantAPIError(t, "another user's artifact list", err, http.StatusNotFound, api.CodeNotFound)
	_, _, err = bob.ArtifactDownload(ctx, a.Job.ID, "data/big.bin", 0)
	wantAPIError(t, "another user's artifact download", err, http.StatusNotFound, api.CodeNotFound)
}

func TestArtifactUploadOfTheWrongSizeKeepsNothing(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	run := e.submit(t, e.admin, bashJob("train"))
	token := registerRunnerToken(t, e.admin, "r")
	rc := e.admin.WithToken(token)
	a := claim(t, rc)
	path := "/api/v1/runner/jobs/" + a.Job.ID + "/artifacts/model.bin"
	for _, tc := range []struct {
		name, size, body, want string
	}{
		{"short body", "100", strings.Repeat("s", 50), "received 50 bytes, expected 100"},
		{"long body", "10", strings.Repeat("l", 50), "more than the 10 bytes expected"},
		{"bad size", "lots", "x", "X-Dstack-Size"},
	} {
		rq := withLease(req{method: http.MethodPut, path: path, body: tc.body}, token, a.Lease)
		rq.header["X-Dstack-Size"] = tc.size
		wantError(t, tc.name, do(t, e.srv.URL, rq), http.StatusBadRequest, api.CodeInvalid, tc.want)
	}
	if fs, err := e.admin.ArtifactList(ctx, run.Name); err != nil || len(fs) != 0 {
		t.Errorf("after refused uploads, artifacts = %+v, %v; want none", fs, err)
	}
	// A refused re-upload keeps the good one.
	if err := rc.JobArtifactUpload(ctx, a.Job.ID, a.Lease, "model.bin", strings.NewReader("good"), 4); err != nil {
		t.Fatal(err)
	}
	rq := withLease(req{method: http.MethodPut, path: path, body: "truncat"}, token, a.Lease)
	rq.header["X-Dstack-Size"] = "1000"
	wantError(t, "short re-upload", do(t, e.srv.URL, rq), http.StatusBadRequest, api.CodeInvalid)
	body, _, err := e.admin.ArtifactDownload(ctx, a.Job.ID, "model.bin", 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(bytesOf(t, body)); got != "good" {
		t.Errorf("after a refused re-upload, artifact = %q, want the good one", got)
	}
}

func TestArtifactPathTraversalIsRefused(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	prepare := api.JobSpec{Workflow: "prepare", Provider: "bash", Commands: []string{"true"}, Artifacts: []string{"data"}}
	run := e.submit(t, e.admin, prepare, bashJob("train", "prepare"))
	token := registerRunnerToken(t, e.admin, "r")
	rc := e.admin.WithToken(token)
	a := claim(t, rc)
	codeBefore := jobCode(t, rc, a)
	code := "code%2F" + e.codeID + ".tar.gz"
	escapes := []string{
		"..%2F..%2F" + code, // the code archive, two levels up
		"%2e%2e/%2e%2e/" + "code/" + e.codeID + ".tar.gz", // dot segments the mux would clean
		"../../../../escape.txt",
		"..%2F..%2F..%2F..%2F..%2Fescape.txt",
		"%2Ftmp%2Fescape.txt",         // absolute
		"data%5C..%5C..%5Cescape.txt", // backslashes
		"data%2F.%2Fx",
		"data%2F%2Fx",
	}
	for _, p := range escapes {
		rq := withLease(req{method: http.MethodPut, path: "/api/v1/runner/jobs/" + a.Job.ID + "/artifacts/" + p, body: "overwritten"}, token, a.Lease)
		if rp := do(t, e.srv.URL, rq); rp.status < 300 {
			t.Errorf("PUT artifact %s: %d, want it refused", p, rp.status)
		}
	}
	if got := jobCode(t, rc, a); !bytes.Equal(got, codeBefore) {
		t.Error("an artifact upload overwrote the code archive")
	}
	if got := files(t, e.srv.DataDir, "*escape*"); len(got) != 0 {
		t.Errorf("artifact uploads wrote outside the job's artifacts: %q", got)
	}
	if got := files(t, filepath.Dir(e.srv.DataDir), "*escape*"); len(got) != 0 {
		t.Errorf("artifact uploads wrote outside the data directory: %q", got)
	}
	if fs, err := e.admin.ArtifactList(ctx, run.Name); err != nil || len(fs) != 0 {
		t.Errorf("artifacts = %+v, %v; want none", fs, err)
	}
	// Downloads cannot reach out either, as a user nor as a dependent job.
	if err := rc.JobArtifactUpload(ctx, a.Job.ID, a.Lease, "data/ok.txt", strings.NewReader("ok"), 2); err != nil {
		t.Fatal(err)
	}
	setStatus(t, rc, a, api.StatusDone)
	b := claim(t, rc)
	for _, p := range escapes {
		for _, rq := range []req{
			{method: http.MethodGet, path: "/api/v1/jobs/" + a.Job.ID + "/artifacts/" + p, token: e.srv.AdminToken},
			withLease(req{method: http.MethodGet, path: "/api/v1/runner/jobs/" + b.Job.ID + "/dependencies/" + a.Job.ID + "/artifacts/" + p}, token, b.Lease),
		} {
			rp := do(t, e.srv.URL, rq)
			if rp.status < 300 || bytes.Contains(rp.body, codeBefore) {
				t.Errorf("GET %s: %d with %d bytes, want it refused", rq.path, rp.status, len(rp.body))
			}
		}
	}
	rp := do(t, e.srv.URL, req{method: http.MethodGet, path: "/api/v1/jobs/" + a.Job.ID + "/artifacts/..%2F..%2F" + code, token: e.srv.AdminToken})
	wantError(t, "download through ..", rp, http.StatusBadRequest, api.CodeInvalid, "clean relative path")
}

// jobCode downloads a job's code archive as its runner.
func jobCode(t *testing.T, rc *client.Client, a *api.Assignment) []byte {
	t.Helper()
	body, err := rc.JobCode(context.Background(), a.Job.ID, a.Lease)
	if err != nil {
		t.Fatalf("download code: %v", err)
	}
	return bytesOf(t, body)
}

// scrape reads /metrics, without a token, as "name{labels}" -> value.
func scrape(t *testing.T, base string) map[string]float64 {
	t.Helper()
	rp := do(t, base, req{method: http.MethodGet, path: "/metrics"})
	if rp.status != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", rp.status, rp.body)
	}
	if ct := rp.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("GET /metrics: Content-Type %q, want Prometheus text", ct)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(rp.body), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

func TestMetricsAfterAJobRuns(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	before := scrape(t, e.srv.URL)
	if before["dstack_job_pickup_seconds_count"] != 0 {
		t.Errorf("pickup count before any job = %v", before["dstack_job_pickup_seconds_count"])
	}
	e.submit(t, e.admin, bashJob("train"))
	e.submit(t, e.admin, bashJob("queued"))
	rc := registerRunner(t, e.admin, "r")
	a := claim(t, rc)
	if _, err := rc.JobLogAppend(ctx, a.Job.ID, a.Lease, 0, []byte("12345\n")); err != nil {
		t.Fatal(err)
	}
	busy := scrape(t, e.srv.URL)
	for series, want := range map[string]float64{
		`dstack_runners{status="busy"}`:     1,
		`dstack_runners{status="idle"}`:     0,
		`dstack_jobs{status="pending"}`:     1,
		`dstack_jobs{status="downloading"}`: 1,
	} {
		if got, ok := busy[series]; !ok || got != want {
			t.Errorf("while a job runs, %s = %v (present %v), want %v", series, got, ok, want)
		}
	}
	setStatus(t, rc, a, api.StatusDone)
	after := scrape(t, e.srv.URL)
	for series, want := range map[string]float64{
		"dstack_job_pickup_seconds_count":           1,
		`dstack_jobs_finished_total{status="done"}`: 1,
		`dstack_jobs{status="done"}`:                1,
		`dstack_jobs{status="pending"}`:             1,
		`dstack_runners{status="idle"}`:             1,
		`dstack_runners{status="offline"}`:          0,
		"dstack_log_bytes_total":                    6,
		"dstack_jobs_interrupted_total":             0,
	} {
		if got, ok := after[series]; !ok || got != want {
			t.Errorf("after the job, %s = %v (present %v), want %v", series, got, ok, want)
		}
	}
	if after[`dstack_job_pickup_seconds_bucket{le="+Inf"}`] != 1 || after["dstack_job_pickup_seconds_sum"] < 0 {
		t.Errorf("pickup histogram is not a histogram of one observation: %v", after)
	}
	var requests float64
	for series, v := range after {
		if strings.HasPrefix(series, "dstack_http_requests_total{") {
			requests += v
		}
	}
	if requests < 5 {
		t.Errorf("dstack_http_requests_total sums to %v, want the requests made", requests)
	}
}
