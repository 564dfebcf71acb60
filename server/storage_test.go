package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/client"
	"github.com/dstackai/dstack/server"
	"github.com/dstackai/dstack/server/servertest"
)

// count is how often s appears in what was logged.
func (l *logBuffer) count(s string) int { return strings.Count(l.String(), s) }

// fakeDisk is what the server's statfs sees: free bytes of a 10 GiB file
// system.
type fakeDisk struct{ free atomic.Uint64 }

func (d *fakeDisk) statfs(string) (free, total uint64, err error) {
	return d.free.Load(), 10 << 30, nil
}

// setupStorage starts a server whose disk is faked, and whose log goes to
// a buffer too.
func setupStorage(t *testing.T, opts ...servertest.Option) (*apiEnv, *fakeDisk, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	opts = append(opts, servertest.WithLogger(slog.New(slog.NewTextHandler(logs, nil))))
	srv := servertest.Start(t, opts...)
	disk := &fakeDisk{}
	disk.free.Store(5 << 30)
	server.SetStatfs(srv.Server, disk.statfs)
	admin := srv.Client()
	return &apiEnv{srv: srv, admin: admin, codeID: uploadCode(t, admin)}, disk, logs
}

// health is GET /healthz: its status and body.
func health(t *testing.T, base string) (int, api.ErrorBody) {
	t.Helper()
	rp := do(t, base, req{method: http.MethodGet, path: "/healthz"})
	var body api.ErrorBody
	_ = json.Unmarshal(rp.body, &body)
	return rp.status, body
}

func TestDiskFullLogAppendIs507AndSaidOnce(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full on this system")
	}
	e, disk, logs := setupStorage(t)
	ctx := context.Background()
	e.submit(t, e.admin, bashJob("train"))
	token := registerRunnerToken(t, e.admin, "r")
	rc := e.admin.WithToken(token)
	a := claim(t, rc)
	// The job's log file is /dev/full: every write fails with ENOSPC, as
	// on a full disk.
	logFile := filepath.Join(e.srv.DataDir, "logs", a.Job.ID+".log")
	if err := os.Symlink("/dev/full", logFile); err != nil {
		t.Fatal(err)
	}
	disk.free.Store(0)
	for range 5 {
		rp := do(t, e.srv.URL, withLease(req{method: http.MethodPost, path: "/api/v1/runner/jobs/" + a.Job.ID + "/logs?offset=0", body: "line\n"}, token, a.Lease))
		wantError(t, "append to a full disk", rp, http.StatusInsufficientStorage, api.CodeInsufficientStorage, "disk is full", "0 B free", filepath.Join(e.srv.DataDir, "logs"))
	}
	if n := logs.count("storage full"); n != 1 {
		t.Errorf("the server logged the full disk %d times for 5 refused appends, want once", n)
	}
	if n := logs.count("request failed"); n != 0 {
		t.Errorf("a storage failure logged as an internal error %d times", n)
	}
	status, body := health(t, e.srv.URL)
	if status != http.StatusServiceUnavailable || body.Status != "degraded" || body.Storage != "disk full: 0 B free in "+filepath.Join(e.srv.DataDir, "logs") {
		t.Errorf("healthz while full: %d %+v", status, body)
	}
	m := scrape(t, e.srv.URL)
	if m[`dstack_storage_degraded{cause="disk_full"}`] != 1 || m[`dstack_storage_degraded{cause="low_space"}`] != 0 {
		t.Errorf("metrics while full: %v", m)
	}
	if v, ok := m[`dstack_storage_free_bytes{dir="`+filepath.Join(e.srv.DataDir, "logs")+`"}`]; !ok || v != 0 {
		t.Errorf("free bytes metric of the log directory: %v, %v", v, ok)
	}
	// New work is refused while the disk is full.
	if _, err := e.admin.CodeUpload(ctx, bytes.NewReader(codeArchive(t, map[string]string{"a": "b"}))); !client.IsCode(err, api.CodeInsufficientStorage) {
		t.Errorf("code upload on a full disk: %v", err)
	}

	// Space comes back: the same append goes through, and it is said once.
	disk.free.Store(5 << 30)
	if err := os.Remove(logFile); err != nil {
		t.Fatal(err)
	}
	if size, err := rc.JobLogAppend(ctx, a.Job.ID, a.Lease, 0, []byte("line\n")); err != nil || size != 5 {
		t.Fatalf("append once space is back: %d, %v", size, err)
	}
	if n := logs.count("storage works again"); n != 1 {
		t.Errorf("the recovery was logged %d times, want once", n)
	}
	if status, body := health(t, e.srv.URL); status != http.StatusOK {
		t.Errorf("healthz after the recovery: %d %+v", status, body)
	}
}

func TestFreeSpaceWatermark(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		minFree int64 // Config.MinFreeSpace
		free    uint64
		refused bool
	}{
		// The default on a 10 GiB file system: 5 % (512 MiB) is under 1 GiB.
		{"default, above", 0, 600 << 20, false},
		{"default, below", 0, 500 << 20, true},
		{"set, above", 2 << 30, 3 << 30, false},
		{"set, below", 2 << 30, 1 << 30, true},
		{"off", -1, 1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e, disk, _ := setupStorage(t, servertest.WithConfig(func(c *server.Config) { c.MinFreeSpace = tt.minFree }))
			disk.free.Store(tt.free)
			ctx := context.Background()
			_, upErr := e.admin.CodeUpload(ctx, bytes.NewReader(codeArchive(t, map[string]string{"x": tt.name})))
			_, runErr := e.admin.RunSubmit(ctx, api.RunSubmitRequest{Workflow: "w", CodeID: e.codeID, Jobs: []api.JobSpec{bashJob("w")}})
			status, body := health(t, e.srv.URL)
			m := scrape(t, e.srv.URL)
			if !tt.refused {
				if upErr != nil || runErr != nil || status != http.StatusOK || m[`dstack_storage_degraded{cause="low_space"}`] != 0 {
					t.Fatalf("above the watermark: upload %v, run %v, healthz %d %+v", upErr, runErr, status, body)
				}
				return
			}
			for what, err := range map[string]error{"code upload": upErr, "run": runErr} {
				var ae *api.Error
				if !client.IsCode(err, api.CodeInsufficientStorage) || !strings.Contains(err.Error(), "--min-free-space") {
					t.Errorf("%s below the watermark: %v", what, err)
				} else if errors.As(err, &ae) && ae.Status != http.StatusInsufficientStorage {
					t.Errorf("%s below the watermark: status %d, want 507", what, ae.Status)
				}
			}
			if status != http.StatusServiceUnavailable || body.Status != "degraded" || !strings.HasPrefix(body.Storage, "low on space: ") {
				t.Errorf("healthz below the watermark: %d %+v", status, body)
			}
			if m[`dstack_storage_degraded{cause="low_space"}`] != 1 {
				t.Errorf("low_space metric below the watermark: %v", m[`dstack_storage_degraded{cause="low_space"}`])
			}
		})
	}
}

func TestIncompleteLogTakesTheRestAfterTheEnd(t *testing.T) {
	t.Parallel()
	eachLogStore(t, testIncompleteLogTakesTheRestAfterTheEnd)
}

func testIncompleteLogTakesTheRestAfterTheEnd(t *testing.T, logs servertest.Option) {
	e := setup(t, logs)
	ctx := context.Background()
	run := e.submit(t, e.admin, bashJob("train"))
	token := registerRunnerToken(t, e.admin, "r")
	rc := e.admin.WithToken(token)
	a := claim(t, rc)
	if _, err := rc.JobLogAppend(ctx, a.Job.ID, a.Lease, 0, []byte("one\n")); err != nil {
		t.Fatal(err)
	}
	// The runner reports the end with 8 bytes not stored.
	j, err := rc.JobSetStatus(ctx, a.Job.ID, a.Lease, api.JobStatusUpdate{Status: api.StatusDone, LogUnsent: 8, LogEnd: 12})
	if err != nil {
		t.Fatal(err)
	}
	if j.Status != api.StatusDone || j.LogMissing != 8 {
		t.Fatalf("job after the report: %s, %d missing; want done, 8", j.Status, j.LogMissing)
	}
	// Another runner of the same user (the same machine registered anew)
	// may send the rest under the job's lease, and no more than the rest.
	rc2 := registerRunner(t, e.admin, "r-again")
	if size, err := rc2.JobLogAppend(ctx, a.Job.ID, a.Lease, 4, []byte("two\n")); err != nil || size != 8 {
		t.Fatalf("late append: %d, %v", size, err)
	}
	if got := getJob(t, e.admin, run.Name, a.Job.ID).LogMissing; got != 4 {
		t.Errorf("missing after half the rest: %d, want 4", got)
	}
	if _, err := rc.JobLogAppend(ctx, a.Job.ID, a.Lease-1, 8, []byte("six\n")); !client.IsCode(err, api.CodeLeaseLost) {
		t.Errorf("late append under an old lease: %v, want lease_lost", err)
	}
	if size, err := rc.JobLogAppend(ctx, a.Job.ID, a.Lease, 8, []byte("six\nextra\n")); err != nil || size != 12 {
		t.Fatalf("last late append: %d, %v", size, err)
	}
	if got := getJob(t, e.admin, run.Name, a.Job.ID).LogMissing; got != 0 {
		t.Errorf("missing once complete: %d, want 0", got)
	}
	if got := jobLog(t, e.admin, a.Job.ID); got != "one\ntwo\nsix\n" {
		t.Errorf("log = %q", got)
	}
	if _, err := rc.JobLogAppend(ctx, a.Job.ID, a.Lease, 12, []byte("more\n")); !client.IsCode(err, api.CodeLeaseLost) {
		t.Errorf("append to a complete log of a finished job: %v, want lease_lost", err)
	}
}
