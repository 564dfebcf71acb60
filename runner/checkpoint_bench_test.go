package runner

import (
	"context"
	"crypto/rand"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/internal/testutil"
)

// checkpointJobFixture runs a job with checkpoints [ckpt] that sleeps, and
// returns it: its checkpointer is driven by hand (its interval is a day).
func checkpointJobFixture(t testing.TB) (*fixture, *job) {
	t.Helper()
	f := setup(t, func(c *Config) { c.CheckpointSettle = -1 })
	code := f.uploadCode(t, nil)
	run := f.submit(t, code, api.JobSpec{Workflow: "w", Commands: []string{"sleep 3600"},
		Checkpoints: []string{"ckpt"}, CheckpointInterval: api.Duration(24 * time.Hour)})
	f.waitStatus(t, run.Name, "w", func(s api.JobStatus) bool { return s == api.StatusRunning })
	var j *job
	testutil.Eventually(t, "the job to run", func() bool {
		f.r.mu.Lock()
		defer f.r.mu.Unlock()
		j = f.r.current
		return j != nil && j.dir != nil && j.ckpt != nil && j.spool != nil
	})
	if err := os.MkdirAll(filepath.Join(j.dir.Path(), "ckpt"), 0o755); err != nil {
		t.Fatal(err)
	}
	return f, j
}

// writeRandomFile writes n random bytes to path.
func writeRandomFile(t testing.TB, path string, n int64) {
	t.Helper()
	fh, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(fh, rand.Reader, n); err != nil {
		t.Fatal(err)
	}
	if err := fh.Close(); err != nil {
		t.Fatal(err)
	}
}

// touch changes the first bytes of a file: new content, same size.
func touch(t testing.TB, path string) {
	t.Helper()
	fh, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(fh, rand.Reader, 16); err != nil {
		t.Fatal(err)
	}
	if err := fh.Close(); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkCheckpoint1GiB measures a checkpoint of one 1 GiB file against
// a server on this machine: the first sync (hash and upload), a sync of
// the file unchanged (nothing read or sent), and the restore of the
// checkpoint into an empty directory (download, hash check, write).
func BenchmarkCheckpoint1GiB(b *testing.B) {
	const size = 1 << 30
	_, j := checkpointJobFixture(b)
	big := filepath.Join(j.dir.Path(), "ckpt", "model.bin")
	writeRandomFile(b, big, size)
	ctx := context.Background()
	b.Run("first", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			b.StopTimer()
			touch(b, big)
			j.ckpt.forget()
			b.StartTimer()
			res, err := j.ckpt.sync(ctx, false)
			if err != nil {
				b.Fatal(err)
			}
			if res.sent != size {
				b.Fatalf("sent %d bytes, want %d", res.sent, size)
			}
		}
	})
	b.Run("unchanged", func(b *testing.B) {
		if _, err := j.ckpt.sync(ctx, false); err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			res, err := j.ckpt.sync(ctx, false)
			if err != nil {
				b.Fatal(err)
			}
			if res.sent != 0 || !res.unchanged {
				b.Fatalf("an unchanged sync sent %d bytes (unchanged %v)", res.sent, res.unchanged)
			}
		}
	})
	b.Run("restore", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			b.StopTimer()
			if err := os.Remove(big); err != nil {
				b.Fatal(err)
			}
			j.ckpt.forget()
			b.StartTimer()
			cp, err := j.ckpt.restore(ctx)
			if err != nil || cp == nil {
				b.Fatalf("restore = %v, %v", cp, err)
			}
		}
		if st, err := os.Stat(big); err != nil || st.Size() != size {
			b.Fatalf("restored file: %v, %v", st, err)
		}
	})
}

// forget drops what the checkpointer knows, as a new attempt's would.
func (c *checkpointer) forget() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.hashed)
	clear(c.listed)
	clear(c.stored)
	c.last = nil
}
