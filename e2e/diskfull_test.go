package e2e

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/dstackai/dstack/api"
)

// mountTmpfs mounts a tmpfs of size bytes at dir, unmounted when the test
// ends; the test is skipped where mounting is not allowed (it needs root or
// CAP_SYS_ADMIN).
func mountTmpfs(t *testing.T, dir string, size int) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+strconv.Itoa(size)+",mode=0700", "tmpfs", dir).CombinedOutput()
	if err != nil {
		t.Skipf("cannot mount a tmpfs for a small data directory (needs root or CAP_SYS_ADMIN): %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
}

// fill writes path until the file system holding it is full.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for n := len(buf); n > 0; {
		if _, err := f.Write(buf[:n]); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("fill %s: %v", path, err)
			}
			n /= 2
		}
	}
}

func getHealth(t *testing.T, base string) (int, api.ErrorBody) {
	t.Helper()
	resp, err := http.Get(base + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var body api.ErrorBody
	_ = json.Unmarshal(b, &body)
	return resp.StatusCode, body
}

// TestDiskFull: the server's log directory is a small file system that
// fills up while a job prints 13,000 lines. New runs are refused with the
// reason; the job ends "done" marked "log incomplete", never plain done;
// /healthz and /metrics say the disk is full; once space is freed the
// runner sends the rest, the whole log is there and the mark goes.
func TestDiskFull(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test: skipped with -short")
	}
	t.Parallel()
	data := t.TempDir()
	logDir := filepath.Join(data, "logs")
	mountTmpfs(t, logDir, 4<<20)
	c := newCluster(t, "", "--data-dir", data, "--min-free-space", "1MiB")
	runner := c.startRunner("r1")
	trigger := filepath.Join(c.dir, "go")
	dir := project(t, map[string]string{".dstack/workflows.yaml": `workflows:
  - name: chatty
    provider: bash
    commands:
      - while [ ! -e ` + trigger + ` ]; do sleep 0.05; done
      - seq 1 13000
  - name: hello
    provider: bash
    commands: [echo hello]
`})
	r := c.dstack(dir, "run", "-d", "chatty")
	if r.code != 0 {
		t.Fatalf("%s", r)
	}
	name := runName(t, r.stdout+r.stderr)
	c.waitStatus(name, api.StatusRunning)

	fill(t, filepath.Join(logDir, "filler"))
	// New work is refused while the disk is below the watermark.
	r = c.dstack(dir, "run", "-d", "hello")
	if r.code == 0 || !strings.Contains(r.stderr, "refuses new runs") || !strings.Contains(r.stderr, logDir) {
		t.Errorf("a run on a full disk:\n%s", r)
	}
	if err := os.WriteFile(trigger, nil, 0o644); err != nil {
		t.Fatal(err)
	}

	run := c.waitRun(name, "to finish", func(r api.Run) bool { return r.Status.Finished() })
	var want strings.Builder
	for i := 1; i <= 13000; i++ {
		want.WriteString(strconv.Itoa(i) + "\n")
	}
	j := run.Jobs[0]
	if j.Status != api.StatusDone || j.LogMissing <= 0 {
		t.Fatalf("job ended %s with %d bytes missing; want done with some missing", j.Status, j.LogMissing)
	}
	mark := "log incomplete: " + strconv.FormatInt(j.LogMissing, 10) + " bytes not stored"
	if r := c.dstack("", "ps"); r.code != 0 || !strings.Contains(r.stdout, "done (log incomplete)") || !strings.Contains(r.stdout, mark) {
		t.Errorf("ps with an incomplete log:\n%s", r)
	}
	if r := c.dstack("", "logs", name); r.code != 0 || !strings.Contains(r.stderr, mark) || len(r.stdout) >= want.Len() {
		t.Errorf("logs of an incomplete log:\n%s", r)
	}
	status, body := getHealth(t, c.URL)
	if status != http.StatusServiceUnavailable || body.Status != "degraded" || body.Storage != "disk full: 0 B free in "+logDir {
		t.Errorf("healthz with a full disk: %d %+v", status, body)
	}
	if m := scrapeMetrics(t, c.URL); m[`dstack_storage_degraded{cause="disk_full"}`] != 1 {
		t.Errorf("dstack_storage_degraded{cause=\"disk_full\"} = %v, want 1", m[`dstack_storage_degraded{cause="disk_full"}`])
	}
	if n := strings.Count(runner.output(), "cannot send the job's log"); n != 1 {
		t.Errorf("the runner warned %d times that it cannot send the log, want once:\n%s", n, runner.output())
	}
	if n := strings.Count(c.server.output(), "storage full"); n != 1 {
		t.Errorf("the server logged the full disk %d times, want once:\n%s", n, c.server.output())
	}

	// Space comes back: the runner sends the rest, the mark goes.
	if err := os.Remove(filepath.Join(logDir, "filler")); err != nil {
		t.Fatal(err)
	}
	c.waitRun(name, "to have its whole log", func(r api.Run) bool { return r.Jobs[0].LogMissing == 0 })
	if r := c.dstack("", "logs", name); r.code != 0 || r.stdout != want.String() || strings.Contains(r.stderr, "log incomplete") {
		t.Errorf("logs once space is back: %d of %d bytes, stderr %q", len(r.stdout), want.Len(), r.stderr)
	}
	if r := c.dstack("", "ps"); r.code != 0 || strings.Contains(r.stdout, "log incomplete") {
		t.Errorf("ps once the log is complete:\n%s", r)
	}
	if status, body := getHealth(t, c.URL); status != http.StatusOK {
		t.Errorf("healthz once space is back: %d %+v", status, body)
	}
	if r := c.dstack(dir, "run", "hello"); r.code != 0 || r.stdout != "hello\n" {
		t.Errorf("a run once space is back:\n%s", r)
	}
}

// scrapeMetrics reads /metrics as "name{labels}" -> value.
func scrapeMetrics(t *testing.T, base string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out
}
