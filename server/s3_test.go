package server_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/server"
	"github.com/dstackai/dstack/server/servertest"
)

const (
	s3Bucket = "dstack-artifacts"
	s3Secret = "s3-secret-key-that-must-not-leak"
)

// fakeS3 is an in-process S3 (gofakes3 on its memory backend) with one
// bucket, s3Bucket.
type fakeS3 struct {
	URL     string
	backend *s3mem.Backend
}

func newFakeS3(t *testing.T) *fakeS3 {
	t.Helper()
	b := s3mem.New()
	if err := b.CreateBucket(s3Bucket); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gofakes3.New(b).Server())
	t.Cleanup(srv.Close)
	return &fakeS3{URL: srv.URL, backend: b}
}

// objects returns the bucket's keys and sizes.
func (f *fakeS3) objects(t *testing.T) map[string]int64 {
	t.Helper()
	list, err := f.backend.ListBucket(s3Bucket, nil, gofakes3.ListBucketPage{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, c := range list.Contents {
		out[c.Key] = c.Size
	}
	return out
}

// awsEnv gives the process the AWS default chain's environment credentials
// and hides any shared configuration of the machine's user. t.Setenv rules
// out t.Parallel: the tests that use it run alone, before the parallel ones.
func awsEnv(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDDSTACKTEST")
	t.Setenv("AWS_SECRET_ACCESS_KEY", s3Secret)
	t.Setenv("AWS_SESSION_TOKEN", "")
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_REGION", "")
	t.Setenv("AWS_DEFAULT_REGION", "")
	none := filepath.Join(t.TempDir(), "none")
	t.Setenv("AWS_CONFIG_FILE", none)
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", none)
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
}

func withS3(url, endpoint string) servertest.Option {
	return servertest.WithConfig(func(c *server.Config) {
		c.Artifacts, c.S3Endpoint, c.S3Region = url, endpoint, "eu-central-1"
	})
}

func TestArtifactsInS3(t *testing.T) {
	awsEnv(t)
	fake := newFakeS3(t)
	e := setup(t, withS3("s3://"+s3Bucket+"/team/a", fake.URL))
	ctx := context.Background()

	// The code archive setup uploaded is in the bucket too.
	if _, ok := fake.objects(t)["team/a/code/"+e.codeID+".tar.gz"]; !ok {
		t.Errorf("code archive %s not in the bucket: %v", e.codeID, fake.objects(t))
	}

	run := e.submit(t, e.admin, api.JobSpec{Workflow: "train", Provider: "bash", Commands: []string{"true"}, Artifacts: []string{"model"}})
	rc := registerRunner(t, e.admin, "r")
	a := claim(t, rc)
	// The runner receives the code through the server, from the bucket.
	code, err := rc.JobCode(ctx, a.Job.ID, a.Lease)
	if err != nil {
		t.Fatalf("code from S3: %v", err)
	}
	if b := bytesOf(t, code); len(b) == 0 {
		t.Error("code from S3 is empty")
	}

	weights := make([]byte, 200_000)
	for i := range weights {
		weights[i] = byte(i * 13)
	}
	uploads := map[string][]byte{"model/weights.bin": weights, "model/notes.txt": []byte("trained\n")}
	for p, b := range uploads {
		if err := rc.JobArtifactUpload(ctx, a.Job.ID, a.Lease, p, bytes.NewReader(b), int64(len(b))); err != nil {
			t.Fatalf("upload %s: %v", p, err)
		}
	}
	setStatus(t, rc, a, api.StatusDone)

	// Each file is an object under the prefix, and nothing went to the data
	// directory.
	objs := fake.objects(t)
	for p, b := range uploads {
		key := "team/a/artifacts/" + a.Job.ID + "/" + p
		if size, ok := objs[key]; !ok || size != int64(len(b)) {
			t.Errorf("object %s: size %d (present %v), want %d; bucket holds %v", key, size, ok, len(b), objs)
		}
	}
	if _, err := os.Stat(filepath.Join(e.srv.DataDir, "blobs")); !os.IsNotExist(err) {
		t.Errorf("the data directory has a blobs folder (%v); with --artifacts nothing goes there", err)
	}

	list, err := e.admin.ArtifactList(ctx, run.Name)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != len(uploads) {
		t.Fatalf("artifact list = %+v, want %d files", list, len(uploads))
	}
	for _, f := range list {
		if b, ok := uploads[f.Path]; !ok || f.Size != int64(len(b)) || f.JobID != a.Job.ID || f.Workflow != "train" {
			t.Errorf("listed %+v, which was not uploaded so", f)
		}
		// The hash is computed while the file streams to the bucket.
		if b := uploads[f.Path]; f.SHA256 != sha256Hex(b) {
			t.Errorf("listed %s with SHA-256 %q, want %s", f.Path, f.SHA256, sha256Hex(b))
		}
	}

	body, n, err := e.admin.ArtifactDownload(ctx, a.Job.ID, "model/weights.bin", 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := bytesOf(t, body); !bytes.Equal(got, weights) || n != int64(len(weights)) {
		t.Errorf("download = %d bytes (length %d), want %d", len(got), n, len(weights))
	}
	// A broken-off download resumes with a Range: the server asks S3 for
	// the rest only.
	const at = 150_001
	body, n, err = e.admin.ArtifactDownload(ctx, a.Job.ID, "model/weights.bin", at)
	if err != nil {
		t.Fatal(err)
	}
	if got := bytesOf(t, body); !bytes.Equal(got, weights[at:]) || n != int64(len(weights)-at) {
		t.Errorf("resumed download = %d bytes (length %d), want the last %d", len(got), n, len(weights)-at)
	}
	path := "/api/v1/jobs/" + a.Job.ID + "/artifacts/model/weights.bin"
	rp := do(t, e.srv.URL, req{method: http.MethodGet, path: path, token: e.srv.AdminToken, header: map[string]string{"Range": "bytes=" + strconv.Itoa(at) + "-"}})
	if rp.status != http.StatusPartialContent || rp.header.Get("Content-Range") != fmt.Sprintf("bytes %d-%d/%d", at, len(weights)-1, len(weights)) || !bytes.Equal(rp.body, weights[at:]) {
		t.Errorf("ranged download: %d, Content-Range %q, %d bytes; want 206, bytes %d-%d/%d and the rest", rp.status, rp.header.Get("Content-Range"), len(rp.body), at, len(weights)-1, len(weights))
	}
	rp = do(t, e.srv.URL, req{method: http.MethodGet, path: path, token: e.srv.AdminToken, header: map[string]string{"Range": "bytes=" + strconv.Itoa(len(weights)) + "-"}})
	if rp.status != http.StatusPartialContent && rp.status != http.StatusOK || len(rp.body) != 0 {
		t.Errorf("range at the end: %d, %d bytes; want no bytes", rp.status, len(rp.body))
	}
	rp = do(t, e.srv.URL, req{method: http.MethodGet, path: "/api/v1/jobs/" + a.Job.ID + "/artifacts/model/missing", token: e.srv.AdminToken})
	wantError(t, "missing artifact", rp, http.StatusNotFound, api.CodeNotFound, "model/missing")

	// The bucket, not the data directory, is what a restarted server reads.
	e.srv.Restart(t)
	if list, err := e.srv.Client().ArtifactList(ctx, run.Name); err != nil || len(list) != len(uploads) {
		t.Errorf("artifacts after restart = %+v, %v; want %d files", list, err, len(uploads))
	}
}

func TestS3ArtifactStoreRefusesToStart(t *testing.T) {
	awsEnv(t)
	fake := newFakeS3(t)
	gone := httptest.NewServer(http.NotFoundHandler())
	gone.Close()
	for _, tc := range []struct {
		name                string
		artifacts, endpoint string
		want                []string
		noAWS               bool // the endpoint may serve the bucket of `dstack aws config` otherwise
	}{
		{"missing bucket", "s3://no-such-bucket/x", fake.URL, []string{"artifact store", `"no-such-bucket" not found`, "create it"}, false},
		{"unreachable endpoint", "s3://" + s3Bucket, gone.URL, []string{"artifact store", "cannot reach", gone.URL, "check the endpoint"}, false},
		{"not an S3 URL", "gs://bucket/x", "", []string{"--artifacts", `"gs://bucket/x"`, "s3://bucket"}, false},
		{"bad endpoint", "s3://" + s3Bucket, "localhost:9000", []string{"--s3-endpoint", `"localhost:9000"`, "http://"}, false},
		{"credentials in the endpoint", "s3://" + s3Bucket, "http://key:" + s3Secret + "@localhost:9000", []string{"--s3-endpoint must not hold credentials"}, false},
		{"endpoint without artifacts or AWS", "", fake.URL, []string{"--s3-endpoint", "--artifacts s3://"}, true},
		{"bad endpoint without artifacts", "", "localhost:9000", []string{"--s3-endpoint", `"localhost:9000"`, "http://"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("AWS_MAX_ATTEMPTS", "1") // no retries of the refused connection
			cfg := server.Config{Host: "127.0.0.1", DataDir: t.TempDir(), Artifacts: tc.artifacts, S3Endpoint: tc.endpoint}
			cfg.AWS.Disabled = tc.noAWS
			s, err := server.New(context.Background(), cfg)
			if err == nil {
				_ = s.Stop()
				t.Fatal("server.New succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not say %q:\n%v", w, err)
				}
			}
			t.Log(err)
			if strings.Contains(err.Error(), s3Secret) {
				t.Errorf("error shows the secret key:\n%v", err)
			}
		})
	}
}
