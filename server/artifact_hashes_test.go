package server_test

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/client"
)

// TestArtifactHashes: each upload is recorded with the SHA-256 of what was
// stored; the listing returns it, a download carries it as its ETag, and a
// resume (Range with If-Range) gets the rest only of the same content.
func TestArtifactHashes(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	run := e.submit(t, e.admin, bashJob("train"))
	token := registerRunnerToken(t, e.admin, "r")
	rc := e.admin.WithToken(token)
	a := claim(t, rc)
	upload := func(p, content string) {
		t.Helper()
		if err := rc.JobArtifactUpload(ctx, a.Job.ID, a.Lease, p, strings.NewReader(content), int64(len(content))); err != nil {
			t.Fatalf("upload %s: %v", p, err)
		}
	}
	listed := func(p string) api.ArtifactFile {
		t.Helper()
		fs, err := e.admin.ArtifactList(ctx, run.Name)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range fs {
			if f.Path == p {
				return f
			}
		}
		t.Fatalf("%s is not listed: %+v", p, fs)
		return api.ArtifactFile{}
	}
	first, second := "AAAAAAAAAA", "BBBBBBBBBB" // same size, other content
	upload("model.bin", first)
	if f := listed("model.bin"); f.SHA256 != sha256Hex([]byte(first)) {
		t.Fatalf("listed %+v, want SHA-256 %s", f, sha256Hex([]byte(first)))
	}
	whole, err := e.admin.ArtifactGet(ctx, a.Job.ID, "model.bin", client.ArtifactRequest{})
	if err != nil {
		t.Fatal(err)
	}
	bytesOf(t, whole.Body)
	tag := whole.ETag
	if tag != `"sha256:`+sha256Hex([]byte(first))+`"` {
		t.Fatalf("ETag %q, want the file's hash", tag)
	}

	get := func(name string, r client.ArtifactRequest, wantOffset int64, want string) {
		t.Helper()
		got, err := e.admin.ArtifactGet(ctx, a.Job.ID, "model.bin", r)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if b := string(bytesOf(t, got.Body)); got.Offset != wantOffset || b != want {
			t.Errorf("%s: %q from offset %d, want %q from %d", name, b, got.Offset, want, wantOffset)
		}
	}
	get("resume of the same file", client.ArtifactRequest{Offset: 4, IfRange: tag}, 4, first[4:])
	get("resume without If-Range", client.ArtifactRequest{Offset: 4}, 4, first[4:])
	get("resume of another file", client.ArtifactRequest{Offset: 4, IfRange: `"sha256:0000"`}, 0, first)
	get("a date as If-Range", client.ArtifactRequest{Offset: 4, IfRange: "Sun, 06 Dec 2026 07:00:00 GMT"}, 0, first)
	// A mismatched If-Range sends the whole file even when the offset is
	// past its end (a longer .part of another file).
	get("a longer part of another file", client.ArtifactRequest{Offset: 50, IfRange: `"sha256:0000"`}, 0, first)

	// Another upload of the same size replaces the hash; the old tag no
	// longer resumes.
	upload("model.bin", second)
	if f := listed("model.bin"); f.SHA256 != sha256Hex([]byte(second)) {
		t.Errorf("after a second upload, listed %+v, want SHA-256 %s", f, sha256Hex([]byte(second)))
	}
	get("resume with the first upload's tag", client.ArtifactRequest{Offset: 4, IfRange: tag}, 0, second)

	// A refused re-upload keeps the file and its hash.
	rq := withLease(req{method: http.MethodPut, path: "/api/v1/runner/jobs/" + a.Job.ID + "/artifacts/model.bin", body: "short"}, token, a.Lease)
	rq.header["X-Dstack-Size"] = "10"
	wantError(t, "short re-upload", do(t, e.srv.URL, rq), http.StatusBadRequest, api.CodeInvalid)
	if f := listed("model.bin"); f.SHA256 != sha256Hex([]byte(second)) {
		t.Errorf("after a refused re-upload, listed %+v, want the kept file's SHA-256 %s", f, sha256Hex([]byte(second)))
	}

	// A file stored before hashes were recorded has none: no hash listed,
	// no ETag, and no If-Range resumes it.
	legacy := filepath.Join(e.srv.DataDir, "blobs", "artifacts", a.Job.ID, "old.bin")
	if err := os.WriteFile(legacy, []byte("0123456789"), 0o600); err != nil {
		t.Fatal(err)
	}
	if f := listed("old.bin"); f.SHA256 != "" || f.Size != 10 {
		t.Errorf("a file without a record is listed %+v, want its size and no hash", f)
	}
	old, err := e.admin.ArtifactGet(ctx, a.Job.ID, "old.bin", client.ArtifactRequest{Offset: 3, IfRange: tag})
	if err != nil {
		t.Fatal(err)
	}
	if b := bytesOf(t, old.Body); old.ETag != "" || old.Offset != 0 || !bytes.Equal(b, []byte("0123456789")) {
		t.Errorf("a file without a hash: ETag %q, %q from offset %d; want no tag and the whole file", old.ETag, b, old.Offset)
	}
}
