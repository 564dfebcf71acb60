package e2e

import (
	"errors"
	"github.com/dstackai/dstack/internal/testutil"
	"io/fs"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
)

// dataBytes is what the server's data directory holds in artifacts, code
// archives and logs, by file.
func dataBytes(t *testing.T, c *cluster) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for _, sub := range []string{"blobs", "logs"} {
		root := filepath.Join(c.dir, "server", sub)
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			info, err := d.Info()
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(root, p)
			out[sub+"/"+filepath.ToSlash(rel)] = info.Size()
			return nil
		})
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
	}
	return out
}

// bucketBytes is what the bucket holds, by key.
func bucketBytes(t *testing.T, b *s3mem.Backend) map[string]int64 {
	t.Helper()
	list, err := b.ListBucket(s3Bucket, nil, gofakes3.ListBucketPage{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, o := range list.Contents {
		out[o.Key] = o.Size
	}
	return out
}

func keysWith(m map[string]int64, part string) []string {
	var out []string
	for k := range m {
		if strings.Contains(k, part) {
			out = append(out, k)
		}
	}
	return out
}

// TestRmAndRetentionFreeTheBytes: on a server keeping artifacts and code in
// local files, and on one keeping them in an S3 bucket, the retention
// deletes an old finished run and `dstack rm -f` a tagged one, and each
// frees the bytes: the data directory and the bucket end as they began.
func TestRmAndRetentionFreeTheBytes(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test: skipped with -short")
	}
	t.Parallel()
	t.Run("LocalFiles", func(t *testing.T) {
		t.Parallel()
		c := newCluster(t, "", "--retention", "10s")
		rmAndRetention(t, c, func() map[string]int64 { return dataBytes(t, c) })
	})
	t.Run("S3", func(t *testing.T) {
		t.Parallel()
		fake := s3mem.New()
		if err := fake.CreateBucket(s3Bucket); err != nil {
			t.Fatal(err)
		}
		s3srv := httptest.NewServer(gofakes3.New(fake).Server())
		t.Cleanup(s3srv.Close)
		c := newClusterEnv(t, []string{
			"AWS_ACCESS_KEY_ID=AKIDE2ETEST", "AWS_SECRET_ACCESS_KEY=" + s3Secret, "AWS_SESSION_TOKEN=", "AWS_PROFILE=", "AWS_REGION=",
			"AWS_CONFIG_FILE=" + filepath.Join(t.TempDir(), "none"),
			"AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(t.TempDir(), "none"),
			"DSTACK_SERVER_RETENTION=10s",
		}, "--artifacts", "s3://"+s3Bucket+"/ci/dstack", "--s3-endpoint", s3srv.URL, "--local-backend", "off")
		rmAndRetention(t, c, func() map[string]int64 {
			m := bucketBytes(t, fake)
			for k, v := range dataBytes(t, c) { // the logs
				m[k] = v
			}
			return m
		})
	})
}

func rmAndRetention(t *testing.T, c *cluster, stored func() map[string]int64) {
	t.Helper()
	c.startRunner("r1")
	dir := project(t, pipeline)
	if before := stored(); len(before) != 0 {
		t.Fatalf("stored before any run: %v", before)
	}
	r := c.dstack(dir, "run", "train", "--epochs", "2")
	if r.code != 0 {
		t.Fatalf("%s", r)
	}
	kept := runName(t, r.stderr)
	if r = c.dstack(dir, "tag", kept, "keep"); r.code != 0 {
		t.Fatalf("%s", r)
	}
	withKept := stored()
	r = c.dstack(dir, "run", "train", "--epochs", "2")
	if r.code != 0 {
		t.Fatalf("%s", r)
	}
	old := c.run(runName(t, r.stderr))
	if withBoth := stored(); len(withBoth) <= len(withKept) {
		t.Fatalf("the second run stored nothing: %v", withBoth)
	}
	// The retention deletes the untagged run ten seconds after it ended,
	// with its logs and artifacts; the code stays for the tagged run.
	testutil.EventuallyWithin(t, 30*time.Second, "the retention to delete "+old.Name, func() bool {
		now := stored()
		for _, j := range old.Jobs {
			if len(keysWith(now, j.ID)) > 0 {
				return false
			}
		}
		return true
	})
	if r = c.dstack(dir, "logs", old.Name); r.code == 0 {
		t.Errorf("logs of a run the retention deleted: %s", r)
	}
	if now := stored(); len(now) != len(withKept) {
		t.Errorf("after the retention: %v\nwant what the tagged run holds: %v", now, withKept)
	}
	// The tagged run stays until deleted with -f; then nothing is left.
	if r = c.dstack(dir, "rm", kept); r.code != 1 || !strings.Contains(r.stderr, "dstack rm -f "+kept) {
		t.Fatalf("rm of a tagged run: %s", r)
	}
	if r = c.dstack(dir, "rm", "-f", kept); r.code != 0 || !strings.Contains(r.stdout, "RUN "+kept+" deleted") {
		t.Fatalf("rm -f: %s", r)
	}
	if now := stored(); len(now) != 0 {
		t.Errorf("left after rm -f of the last run: %v", now)
	}
}

// TestQuotaRefusalStoresNothing: a run whose code would take the user over
// the server's quota (DSTACK_SERVER_STORAGE_QUOTA) fails with exit 1 and
// the usage and the quota, and leaves no file and no run.
func TestQuotaRefusalStoresNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test: skipped with -short")
	}
	t.Parallel()
	c := newClusterEnv(t, []string{"DSTACK_SERVER_STORAGE_QUOTA=100"}, "--local-backend", "off")
	dir := project(t, pipeline)
	r := c.dstack(dir, "run", "train")
	if r.code != 1 || !strings.Contains(r.stderr, "storage quota exceeded: 0 B used of 100 B; delete runs with `dstack rm` or ask an admin to raise it") {
		t.Fatalf("run over the quota: %s", r)
	}
	if files := dataBytes(t, c); len(files) != 0 {
		t.Errorf("files stored by a refused run: %v", files)
	}
	if runs := c.runs(); len(runs) != 0 {
		t.Errorf("runs after a refused run: %+v", runs)
	}
	if _, err := os.Stat(filepath.Join(c.dir, "server", "blobs", "code")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("code directory after a refused upload: %v", err)
	}
}
