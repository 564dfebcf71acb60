package server_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/dstackai/dstack/api"
)

// testBadArtifactUploads uploads artifacts that no client could write back
// to disk, and checks each is refused with the reason (400 or 409), that
// nothing of them is stored, and that the good ones stay.
func testBadArtifactUploads(t *testing.T, e *apiEnv) {
	ctx := context.Background()
	run := e.submit(t, e.admin, bashJob("train"))
	token := registerRunnerToken(t, e.admin, "r")
	rc := e.admin.WithToken(token)
	a := claim(t, rc)
	for _, p := range []string{"a", "d/b"} {
		if err := rc.JobArtifactUpload(ctx, a.Job.ID, a.Lease, p, strings.NewReader("good"), 4); err != nil {
			t.Fatalf("upload %s: %v", p, err)
		}
	}
	long := strings.Repeat("n", 256)
	for _, tc := range []struct {
		name, path string // path is escaped for the URL
		status     int
		code       string
		want       string
	}{
		{"through a file", "a/b", http.StatusConflict, api.CodeConflict, "a is a file of this job already"},
		{"deep through a file", "a/b/c", http.StatusConflict, api.CodeConflict, "a is a file of this job already"},
		{"over a directory", "d", http.StatusConflict, api.CodeConflict, "files under d/ already (d/b)"},
		{"name over 255 bytes", long, http.StatusBadRequest, api.CodeInvalid, "name of 256 bytes, more than 255"},
		{"directory name over 255 bytes", long + "/x", http.StatusBadRequest, api.CodeInvalid, "name of 256 bytes"},
		{"newline", url.PathEscape("evil\nname"), http.StatusBadRequest, api.CodeInvalid, "control character U+000A"},
		{"terminal escape", url.PathEscape("x\x1b]0;pwned\x07"), http.StatusBadRequest, api.CodeInvalid, "control character U+001B"},
		{"not UTF-8", "bad%FFname", http.StatusBadRequest, api.CodeInvalid, "not valid UTF-8"},
	} {
		rq := withLease(req{method: http.MethodPut, path: "/api/v1/runner/jobs/" + a.Job.ID + "/artifacts/" + tc.path, body: "bad"}, token, a.Lease)
		wantError(t, tc.name, do(t, e.srv.URL, rq), tc.status, tc.code, tc.want, "nothing was stored")
	}
	// A name of exactly 255 bytes is fine.
	ok := strings.Repeat("k", 255)
	if err := rc.JobArtifactUpload(ctx, a.Job.ID, a.Lease, "e/"+ok, strings.NewReader("long"), 4); err != nil {
		t.Errorf("upload a 255-byte name: %v", err)
	}
	fs, err := e.admin.ArtifactList(ctx, run.Name)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range fs {
		got = append(got, f.Path)
	}
	if want := "a,d/b,e/" + ok; strings.Join(got, ",") != want {
		t.Errorf("artifacts = %q, want %q", got, want)
	}
}

func TestBadArtifactUploadsAreRefused(t *testing.T) {
	t.Parallel()
	testBadArtifactUploads(t, setup(t))
}

// TestBadArtifactUploadsAreRefusedInS3: a bucket would hold "a" and "a/b"
// both; the server refuses them there too, as no download could write both.
func TestBadArtifactUploadsAreRefusedInS3(t *testing.T) {
	awsEnv(t)
	fake := newFakeS3(t)
	testBadArtifactUploads(t, setup(t, withS3("s3://"+s3Bucket+"/names", fake.URL)))
}
