package runner

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/internal/testutil"
	"github.com/dstackai/dstack/server/servertest"
)

// TestIncompleteLogIsCompletedLater: the server cannot store a job's log
// (its file is /dev/full: every write fails with ENOSPC). The job's end is
// reported with the missing count, never as a plain done; the runner keeps
// the spool across a restart, and once the server can store again the
// whole log arrives and the mark goes.
func TestIncompleteLogIsCompletedLater(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full on this system")
	}
	srv := servertest.Start(t)
	f := &fixture{srv: srv, admin: srv.Client()}
	f.cfg = Config{
		Server: srv.URL, Token: srv.AdminToken, Name: "test-runner", DataDir: t.TempDir(),
		Resources: &api.HostResources{CPUs: 4, MemoryMiB: 8192, DiskMiB: 100 << 10},
		StopGrace: time.Second, LogAckTimeout: time.Hour, // only the full disk ends the wait
	}
	const lines = 13000
	run := f.submit(t, f.uploadCode(t, nil), api.JobSpec{Workflow: "w", Commands: []string{"seq 1 " + strconv.Itoa(lines)}})
	jobID := run.Jobs[0].ID
	logFile := filepath.Join(srv.DataDir, "logs", jobID+".log")
	if err := os.Symlink("/dev/full", logFile); err != nil {
		t.Fatal(err)
	}

	log, rec := newRecorder(testLogger(t), slog.LevelInfo)
	r, err := New(f.cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Stop)
	var want strings.Builder
	for i := 1; i <= lines; i++ {
		want.WriteString(strconv.Itoa(i) + "\n")
	}

	j := f.waitStatus(t, run.Name, "w", finished)
	if j.Status != api.StatusDone || j.LogMissing != int64(want.Len()) {
		t.Fatalf("job %s with %d bytes missing; want done with %d missing", j.Status, j.LogMissing, want.Len())
	}
	if n := rec.count("WARN cannot send the job's log"); n != 1 {
		t.Errorf("%d warnings that the log cannot be sent, want 1", n)
	}

	// The runner stops while the server still cannot store: the spool stays.
	r.Stop()
	spool := filepath.Join(f.cfg.DataDir, "spool", jobID+".log")
	if b, err := os.ReadFile(spool); err != nil || string(b) != want.String() {
		t.Fatalf("spool after the stop: %d bytes, %v; want the whole output", len(b), err)
	}
	if j := f.job(t, run.Name, "w"); j.LogMissing != int64(want.Len()) {
		t.Fatalf("log missing %d after the stop, want %d", j.LogMissing, want.Len())
	}

	// A new life of the runner goes on sending; the disk gets room.
	r2 := f.startRunner(t)
	if err := os.Remove(logFile); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "the log to be complete", func() bool { return f.job(t, run.Name, "w").LogMissing == 0 })
	if got := f.logs(t, jobID); got != want.String() {
		t.Fatalf("log has %d bytes, want %d", len(got), want.Len())
	}
	if j := f.job(t, run.Name, "w"); j.Status != api.StatusDone {
		t.Errorf("status %s after the log completed, want done", j.Status)
	}
	testutil.Eventually(t, "the spool to be removed", func() bool {
		_, err := os.Stat(spool)
		return errors.Is(err, os.ErrNotExist)
	})
	// The runner takes other jobs meanwhile and after.
	run2 := f.submit(t, f.uploadCode(t, nil), api.JobSpec{Workflow: "w", Commands: []string{"echo next"}})
	if j := f.waitStatus(t, run2.Name, "w", finished); j.Status != api.StatusDone || j.LogMissing != 0 || j.RunnerID != r2.ID() {
		t.Errorf("next job: %s, %d missing, on %s", j.Status, j.LogMissing, j.RunnerID)
	}
}
