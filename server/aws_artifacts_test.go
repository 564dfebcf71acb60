package server_test

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/client"
	"github.com/dstackai/dstack/server"
	"github.com/dstackai/dstack/server/servertest"
)

// runWithArtifact submits a run of one job, has a runner upload one
// artifact file for it and finish it, and returns the job's ID.
func runWithArtifact(t *testing.T, e *apiEnv, rc *client.Client, path string, content []byte) (*api.Run, string) {
	t.Helper()
	run := e.submit(t, e.admin, api.JobSpec{Workflow: "train", Provider: "bash", Commands: []string{"true"}, Artifacts: []string{"model"}})
	a := claim(t, rc)
	if a.Job.ID != run.Jobs[0].ID {
		t.Fatalf("claimed %s, want %s", a.Job.ID, run.Jobs[0].ID)
	}
	if err := rc.JobArtifactUpload(context.Background(), a.Job.ID, a.Lease, path, bytes.NewReader(content), int64(len(content))); err != nil {
		t.Fatalf("upload %s: %v", path, err)
	}
	setStatus(t, rc, a, api.StatusDone)
	return run, a.Job.ID
}

func download(t *testing.T, c *client.Client, jobID, path string) ([]byte, error) {
	t.Helper()
	body, _, err := c.ArtifactDownload(context.Background(), jobID, path, 0)
	if err != nil {
		return nil, err
	}
	return bytesOf(t, body), nil
}

// TestAWSArtifactBucket: with an artifact bucket configured, the artifacts
// of runs submitted from then on go to s3://BUCKET/dstack/ with the AWS
// credentials, and those stored before stay readable where they are.
func TestAWSArtifactBucket(t *testing.T) {
	t.Parallel()
	fake := newFakeS3(t)
	e := setupAWS(t, servertest.WithConfig(func(c *server.Config) { c.S3Endpoint = fake.URL }))
	ctx := context.Background()
	rc := registerRunner(t, e.admin, "r")

	before, beforeJob := runWithArtifact(t, e.apiEnv, rc, "model/a.txt", []byte("stored before\n"))
	if _, err := os.Stat(filepath.Join(e.srv.DataDir, "blobs", "artifacts", beforeJob, "model", "a.txt")); err != nil {
		t.Fatalf("an artifact before the bucket is not in the data directory: %v", err)
	}

	bad := awsRequest(awsSecret)
	bad.ArtifactBucket = "no-such-bucket"
	rp := e.putAWS(t, e.srv.AdminToken, bad)
	wantError(t, "missing bucket", rp, http.StatusBadRequest, api.CodeInvalid, `"no-such-bucket" not found`, "nothing was saved")
	bad.ArtifactBucket = "s3://" + s3Bucket + "/sub/dir"
	wantError(t, "a path in the bucket", e.putAWS(t, e.srv.AdminToken, bad), http.StatusBadRequest, api.CodeInvalid, "bucket's name only")
	if got, err := e.admin.AWSGet(ctx); err != nil || got.Configured {
		t.Fatalf("a refused bucket was saved: %+v %v", got, err)
	}
	good := awsRequest(awsSecret)
	good.ArtifactBucket = "s3://" + s3Bucket
	got, err := e.admin.AWSPut(ctx, good)
	if err != nil || got.ArtifactBucket != s3Bucket {
		t.Fatalf("PUT with a bucket: %+v %v", got, err)
	}

	weights := bytes.Repeat([]byte("w"), 100_000)
	after, afterJob := runWithArtifact(t, e.apiEnv, rc, "model/weights.bin", weights)
	key := "dstack/artifacts/" + afterJob + "/model/weights.bin"
	if size, ok := fake.objects(t)[key]; !ok || size != int64(len(weights)) {
		t.Fatalf("object %s: size %d (present %v); bucket holds %v", key, size, ok, fake.objects(t))
	}
	if _, err := os.Stat(filepath.Join(e.srv.DataDir, "blobs", "artifacts", afterJob)); !os.IsNotExist(err) {
		t.Errorf("an artifact after the bucket is in the data directory too (%v)", err)
	}
	for _, tc := range []struct {
		run   *api.Run
		job   string
		path  string
		bytes []byte
	}{{before, beforeJob, "model/a.txt", []byte("stored before\n")}, {after, afterJob, "model/weights.bin", weights}} {
		if b, err := download(t, e.admin, tc.job, tc.path); err != nil || !bytes.Equal(b, tc.bytes) {
			t.Errorf("download %s of %s: %d bytes, %v", tc.path, tc.run.Name, len(b), err)
		}
		if fs, err := e.admin.ArtifactList(ctx, tc.run.Name); err != nil || len(fs) != 1 || fs[0].Path != tc.path {
			t.Errorf("list of %s: %+v %v", tc.run.Name, fs, err)
		}
	}

	// Without AWS the bucket cannot be read; the data directory still can.
	if err := e.admin.AWSDelete(ctx, false); err != nil {
		t.Fatal(err)
	}
	_, err = download(t, e.admin, afterJob, "model/weights.bin")
	apiErr(t, "bucket without AWS", err, api.CodeUnavailable, "s3://"+s3Bucket+"/dstack", "dstack aws config")
	if b, err := download(t, e.admin, beforeJob, "model/a.txt"); err != nil || string(b) != "stored before\n" {
		t.Errorf("download from the data directory without AWS: %q %v", b, err)
	}
	// Configured again without a bucket: the job's artifacts are where it
	// says, and new runs' go to the data directory.
	if _, err := e.admin.AWSPut(ctx, awsRequest(awsSecret)); err != nil {
		t.Fatal(err)
	}
	if b, err := download(t, e.admin, afterJob, "model/weights.bin"); err != nil || !bytes.Equal(b, weights) {
		t.Errorf("download from the bucket once AWS is back: %d bytes, %v", len(b), err)
	}
	_, lastJob := runWithArtifact(t, e.apiEnv, rc, "model/c.txt", []byte("c"))
	if _, err := os.Stat(filepath.Join(e.srv.DataDir, "blobs", "artifacts", lastJob, "model", "c.txt")); err != nil {
		t.Errorf("an artifact after the bucket was dropped is not in the data directory: %v", err)
	}
}
