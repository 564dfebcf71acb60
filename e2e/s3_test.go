package e2e

import (
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/internal/testutil"
)

const (
	s3Bucket = "dstack-e2e"
	s3Secret = "e2e-secret-access-key-never-shown"
)

// TestArtifactsInS3 runs the pipeline on a server keeping artifacts and code
// in an S3 bucket (gofakes3, in this process) reached through --s3-endpoint,
// with credentials in the server's environment only.
func TestArtifactsInS3(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test: skipped with -short")
	}
	t.Parallel()
	fake := s3mem.New()
	if err := fake.CreateBucket(s3Bucket); err != nil {
		t.Fatal(err)
	}
	s3srv := httptest.NewServer(gofakes3.New(fake).Server())
	t.Cleanup(s3srv.Close)

	c := newClusterEnv(t, []string{
		"AWS_ACCESS_KEY_ID=AKIDE2ETEST",
		"AWS_SECRET_ACCESS_KEY=" + s3Secret,
		"AWS_SESSION_TOKEN=",
		"AWS_PROFILE=",
		"AWS_REGION=",
		"AWS_CONFIG_FILE=" + filepath.Join(t.TempDir(), "none"),
		"AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(t.TempDir(), "none"),
	}, "--artifacts", "s3://"+s3Bucket+"/ci/dstack", "--s3-endpoint", s3srv.URL, "--s3-region", "eu-west-1",
		"--local-backend", "off", "--log-level", "debug")
	c.startRunner("r1")

	dir := project(t, pipeline)
	r := c.dstack(dir, "run", "train", "--epochs", "2")
	if r.code != 0 || r.stdout != pipelineLog {
		t.Fatalf("%s\nwant stdout\n%s", r, pipelineLog)
	}
	name := runName(t, r.stderr)
	run := c.run(name)

	out := filepath.Join(t.TempDir(), "out")
	r = c.dstack(dir, "artifacts", "download", name, "-o", out)
	if r.code != 0 || !strings.Contains(r.stderr, "Downloaded 2 files") {
		t.Fatalf("%s", r)
	}
	want := map[string]string{
		"prepare/data/numbers.txt": "1\n2\n3\n",
		"train/model/result.txt":   "sum=6 epochs=2\n",
	}
	for path, content := range want {
		if got := readFile(t, filepath.Join(out, filepath.FromSlash(path))); got != content {
			t.Errorf("downloaded %s = %q, want %q", path, got, content)
		}
	}

	// The objects are in the bucket, under the prefix: each job's artifacts
	// and the code archive.
	list, err := fake.ListBucket(s3Bucket, nil, gofakes3.ListBucketPage{})
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]int64{}
	var code int
	for _, o := range list.Contents {
		keys[o.Key] = o.Size
		if strings.HasPrefix(o.Key, "ci/dstack/code/") {
			code++
		}
	}
	for _, j := range run.Jobs {
		path := map[string]string{"prepare": "data/numbers.txt", "train": "model/result.txt"}[j.Workflow]
		key := "ci/dstack/artifacts/" + j.ID + "/" + path
		if size, ok := keys[key]; !ok || size != int64(len(want[j.Workflow+"/"+path])) {
			t.Errorf("object %s: size %d (present %v); the bucket holds %v", key, size, ok, keys)
		}
	}
	if code != 1 {
		t.Errorf("%d code archives under ci/dstack/code/, want 1; the bucket holds %v", code, keys)
	}
	if _, err := os.Stat(filepath.Join(c.dir, "server", "blobs")); !os.IsNotExist(err) {
		t.Errorf("the server's data directory has a blobs folder (%v); with --artifacts nothing goes there", err)
	}

	// A download that broke off resumes: the bytes already there are kept,
	// not fetched again, when the .part is the start of the same file (its
	// .part.etag is the tag the server sent, the SHA-256 recorded while the
	// file streamed to the bucket).
	var numbers api.ArtifactFile
	for _, j := range run.Jobs {
		if j.Workflow == "prepare" {
			numbers = api.ArtifactFile{Workflow: "prepare", JobID: j.ID, Path: "data/numbers.txt"}
		}
	}
	tag := c.artifactETag(t, numbers)
	out2 := filepath.Join(t.TempDir(), "out")
	part := filepath.Join(out2, "prepare", "data", "numbers.txt.part")
	if err := os.MkdirAll(filepath.Dir(part), 0o755); err != nil {
		t.Fatal(err)
	}
	writePart := func(content string) {
		t.Helper()
		if err := os.WriteFile(part, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(part+".etag", []byte(tag+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writePart("1\n")
	r = c.dstack(dir, "artifacts", "download", name, "-o", out2)
	if r.code != 0 || !strings.Contains(r.stdout, "resumed at 2 B") {
		t.Fatalf("resume: %s", r)
	}
	if got := readFile(t, filepath.Join(out2, "prepare", "data", "numbers.txt")); got != "1\n2\n3\n" {
		t.Errorf("resumed file = %q, want %q", got, "1\n2\n3\n")
	}
	// Kept bytes that are not the file's fail the check of its hash: the
	// file is named and the .part removed.
	if err := os.Remove(filepath.Join(out2, "prepare", "data", "numbers.txt")); err != nil {
		t.Fatal(err)
	}
	writePart("X\n")
	r = c.dstack(dir, "artifacts", "download", name, "-o", out2)
	if r.code == 0 || !strings.Contains(r.stderr, "download prepare/data/numbers.txt: the file received has SHA-256") {
		t.Fatalf("a damaged .part: %s", r)
	}
	if _, err := os.Stat(part); !os.IsNotExist(err) {
		t.Errorf("the damaged .part was kept (%v)", err)
	}

	c.stopServer()
	if out := c.server.output(); strings.Contains(out, s3Secret) {
		t.Errorf("the server's output shows the secret access key:\n%s", out)
	} else if !strings.Contains(out, "s3://"+s3Bucket+"/ci/dstack") {
		t.Errorf("the server's log does not say where artifacts go:\n%s", out)
	}
}

// newClusterEnv is newCluster on SQLite with env (NAME=VALUE) added to the
// server's environment alone: runners and the CLI do not see it.
func newClusterEnv(t *testing.T, env []string, serverFlags ...string) *cluster {
	t.Helper()
	dir := t.TempDir()
	c := &cluster{t: t, dir: dir, home: filepath.Join(dir, "home"), flags: serverFlags}
	for _, d := range []string{c.home, filepath.Join(dir, "tmp")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(c.stopAll)
	args := append([]string{"server", "--host", "127.0.0.1", "--port", "0",
		"--data-dir", filepath.Join(dir, "server"), "--no-cli-config"}, serverFlags...)
	p := c.start("server", "", c.env(env...), bins.dstack, args...)
	testutil.EventuallyWithin(t, startTimeout, "dstack server to print its URL and token", func() bool {
		return p.exited() || tokenRe.MatchString(p.stdout())
	})
	if p.exited() {
		t.Fatalf("dstack server exited with code %d before it started:\n%s", p.code(), p.output())
	}
	c.URL = urlRe.FindStringSubmatch(p.stdout())[1]
	c.Token = tokenRe.FindStringSubmatch(p.stdout())[1]
	c.server = p
	return c
}

// TestServerRefusesMissingBucket: a server whose bucket cannot be used does
// not start, and says why.
func TestServerRefusesMissingBucket(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test: skipped with -short")
	}
	t.Parallel()
	s3srv := httptest.NewServer(gofakes3.New(s3mem.New()).Server())
	t.Cleanup(s3srv.Close)
	dir := t.TempDir()
	c := &cluster{t: t, dir: dir, home: dir}
	t.Cleanup(c.stopAll)
	p := c.start("server", "", c.env("AWS_ACCESS_KEY_ID=AKIDE2ETEST", "AWS_SECRET_ACCESS_KEY="+s3Secret, "AWS_PROFILE=",
		"AWS_CONFIG_FILE="+filepath.Join(dir, "none"), "AWS_SHARED_CREDENTIALS_FILE="+filepath.Join(dir, "none")),
		bins.dstack, "server", "--port", "0", "--data-dir", filepath.Join(dir, "server"), "--no-cli-config", "--local-backend", "off",
		"--artifacts", "s3://no-such-bucket/dstack", "--s3-endpoint", s3srv.URL)
	if code := p.wait(t, startTimeout); code == 0 {
		t.Fatalf("dstack server exited 0:\n%s", p.output())
	}
	out := p.output()
	for _, want := range []string{`S3 bucket "no-such-bucket" not found at ` + s3srv.URL, "create it"} {
		if !strings.Contains(out, want) {
			t.Errorf("the server's error does not say %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, s3Secret) {
		t.Errorf("the server's output shows the secret access key:\n%s", out)
	}
}
