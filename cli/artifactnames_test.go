package cli_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/client"
	"github.com/dstackai/dstack/server/servertest"
)

// TestArtifactsDownloadRefusesUnsafeNames: an artifact whose name holds a
// control character (stored before the server refused them) is not written
// to the user's disk; the command says which and fails. (Names over 255
// bytes, which only a bucket can hold, are refused by the same check:
// api.TestCheckArtifactPath.)
func TestArtifactsDownloadRefusesUnsafeNames(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, file, want string }{
		{"newline", "evil\nname.txt", "control character U+000A"},
		{"terminal escape", "x\x1b]0;pwned\x07", "control character U+001B"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := setup(t)
			srv := h.serve()
			ctx := context.Background()
			run, rc, a := artifactJob(t, srv)
			if err := rc.JobArtifactUpload(ctx, a.Job.ID, a.Lease, "ok.txt", strings.NewReader("ok"), 2); err != nil {
				t.Fatal(err)
			}
			// What a server without the upload checks stored: the file
			// straight in its artifact store.
			bad := filepath.Join(srv.DataDir, "blobs", "artifacts", a.Job.ID, tc.file)
			if err := os.WriteFile(bad, []byte("bad"), 0o600); err != nil {
				t.Fatal(err)
			}

			out := filepath.Join(t.TempDir(), "out")
			r := h.run("artifacts", "download", run.Name, "-o", out)
			if r.code == 0 || !strings.Contains(r.stderr, tc.want) || !strings.Contains(r.stderr, "not downloaded") {
				t.Errorf("download of %q: exit %d, stderr %q; want a failure saying %q", tc.file, r.code, r.stderr, tc.want)
			}
			_ = filepath.WalkDir(out, func(p string, d os.DirEntry, err error) error {
				if err != nil {
					return nil //nolint:nilerr // nothing was written: out was not even made
				}
				if strings.ContainsAny(d.Name(), "\n\x1b") {
					t.Errorf("download wrote %q", p)
				}
				return nil
			})
		})
	}
}

// artifactJob submits a one-job run and claims its job with a runner of
// its own: the test uploads its artifacts through rc.
func artifactJob(t *testing.T, srv *servertest.Server) (*api.Run, *client.Client, *api.Assignment) {
	t.Helper()
	ctx := context.Background()
	c := srv.Client()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	_ = tw.WriteHeader(&tar.Header{Name: "README", Mode: 0o644, Size: 1, Typeflag: tar.TypeReg})
	_, _ = tw.Write([]byte("x"))
	_ = tw.Close()
	_ = gz.Close()
	up, err := c.CodeUpload(ctx, &buf)
	if err != nil {
		t.Fatal(err)
	}
	run, err := c.RunSubmit(ctx, api.RunSubmitRequest{CodeID: up.CodeID, Workflow: "train",
		Jobs: []api.JobSpec{{Workflow: "train", Provider: "bash", Commands: []string{"true"}}}})
	if err != nil {
		t.Fatal(err)
	}
	res := api.HostResources{CPUs: 1, MemoryMiB: 1024}
	reg, err := c.RunnerRegister(ctx, api.RunnerRegisterRequest{Name: "r", Executor: "shell", Resources: res})
	if err != nil {
		t.Fatal(err)
	}
	rc := c.WithToken(reg.Token)
	a, err := rc.RunnerClaim(ctx, api.ClaimRequest{Free: res, Wait: api.Duration(10 * time.Second)})
	if err != nil || a == nil {
		t.Fatalf("claim: %v %v", a, err)
	}
	return run, rc, a
}

// TestArtifactsDownloadOfTheLongestName: a file whose name is 255 bytes,
// the most file systems hold, downloads (its .part name is shorter).
func TestArtifactsDownloadOfTheLongestName(t *testing.T) {
	t.Parallel()
	h := setup(t)
	srv := h.serve()
	run, rc, a := artifactJob(t, srv)
	name := strings.Repeat("k", 255)
	if err := rc.JobArtifactUpload(context.Background(), a.Job.ID, a.Lease, "d/"+name, strings.NewReader("long"), 4); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "out")
	if r := h.run("artifacts", "download", run.Name, "-o", out); r.code != 0 {
		t.Fatalf("download: %+v", r)
	}
	if b, err := os.ReadFile(filepath.Join(out, "train", "d", name)); err != nil || string(b) != "long" {
		t.Errorf("255-byte name: %q, %v", b, err)
	}
}
