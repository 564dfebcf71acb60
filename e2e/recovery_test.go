package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/internal/testutil"
)

var hello = map[string]string{".dstack/workflows.yaml": `workflows:
  - name: hello
    provider: bash
    commands:
      - echo "hello from the job"
      - echo "and a second line"
`}

const helloLog = "hello from the job\nand a second line\n"

func TestServerRestart(t *testing.T) {
	eachDB(t, func(t *testing.T, dsn string) {
		c := newCluster(t, dsn)
		runner := c.startRunner("r1")
		dir := project(t, hello)
		r := c.dstack(dir, "run", "hello")
		if r.code != 0 || r.stdout != helloLog {
			t.Fatalf("%s", r)
		}
		name := runName(t, r.stderr)

		c.stopServer()
		if out := c.server.stdout(); !strings.Contains(out, "Stopping the dstack server") {
			t.Errorf("the server did not say it stops:\n%s", out)
		}
		r = c.dstack("", "ps")
		if r.code != 1 || !strings.Contains(r.stderr, "cannot reach the dstack server at "+c.URL) {
			t.Errorf("ps while the server is down:\n%s", r)
		}

		c.restartServer()
		r = c.dstack("", "logs", name)
		if r.code != 0 || r.stdout != helloLog {
			t.Errorf("logs after the restart:\n%s", r)
		}
		if run := c.run(name); run.Status != api.StatusDone {
			t.Errorf("the run is %s after the restart, want done", run.Status)
		}
		if strings.Contains(c.server.stdout(), "The admin token is") {
			t.Errorf("the restarted server printed a new admin token:\n%s", c.server.stdout())
		}

		// The same token works, and the runner (not restarted) reconnects
		// and takes the next run.
		r = c.dstack(dir, "run", "hello")
		if r.code != 0 || r.stdout != helloLog {
			t.Fatalf("a run after the restart:\n%s", r)
		}
		if runner.exited() {
			t.Fatalf("the runner exited:\n%s", runner.output())
		}
		rs := c.runners()
		if len(rs) != 1 || rs[0].Name != "r1" || rs[0].Status != api.RunnerOnline {
			t.Errorf("runners after the restart: %+v", rs)
		}
		if run := c.run(runName(t, r.stderr)); run.Jobs[0].RunnerName != "r1" {
			t.Errorf("the run after the restart ran on %q, want r1", run.Jobs[0].RunnerName)
		}
	})
}

func TestRunnerKilled(t *testing.T) {
	eachDB(t, func(t *testing.T, dsn string) {
		c := newCluster(t, dsn, "--heartbeat-timeout", "2s")
		r1 := c.startRunner("r1")

		// The job waits for a file the test creates once the job is
		// requeued. Its first attempt outlives its runner (it has a process
		// group of its own): it notes its group to be killed at the end.
		scratch := t.TempDir()
		pids, gate := filepath.Join(scratch, "pids"), filepath.Join(scratch, "gate")
		t.Cleanup(func() { killGroups(pids) })
		dir := project(t, map[string]string{".dstack/workflows.yaml": `workflows:
  - name: slow
    provider: bash
    commands:
      - echo "slow started"
      - echo $$ >> '` + pids + `'
      - i=0; while [ ! -e '` + gate + `' ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
      - echo "slow finished"
`})
		follow := c.startDstack(dir, "run", "slow")
		var name string
		testutil.EventuallyWithin(t, waitTimeout, "dstack run to submit the run", func() bool {
			m := runRe.FindStringSubmatch(follow.stderr())
			if m != nil {
				name = m[1]
			}
			return m != nil || follow.exited()
		})
		if follow.exited() {
			t.Fatalf("dstack run ended early:\n%s", follow.output())
		}
		testutil.EventuallyWithin(t, waitTimeout, "the job to start on r1", func() bool {
			return strings.Contains(follow.stdout(), "slow started")
		})

		if err := r1.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		r1.wait(t, stopTimeout)
		// Attempts count from 0: the requeued job waits for its attempt 1.
		run := c.waitRun(name, "to be requeued", func(r api.Run) bool {
			return r.Jobs[0].Attempt == 1 && r.Jobs[0].Status == api.StatusPending
		})
		if run.Status.Finished() {
			t.Fatalf("the run is %s after its runner died", run.Status)
		}
		if err := os.WriteFile(gate, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		c.startRunner("r2")

		if code := follow.wait(t, waitTimeout); code != 0 {
			t.Fatalf("dstack run: exit code %d\n%s", code, follow.output())
		}
		if !strings.Contains(follow.stdout(), "slow finished") || !strings.Contains(follow.stderr(), "RUN "+name+" done") {
			t.Errorf("dstack run:\n%s", follow.output())
		}
		// dstack run notes the requeue when one of its polls saw the job
		// before it and one after.
		if e := follow.stderr(); strings.Contains(e, "was interrupted") && !strings.Contains(e, "it is queued again, attempt 2") {
			t.Errorf("dstack run's note of the requeue:\n%s", e)
		}
		run = c.run(name)
		if j := run.Jobs[0]; run.Status != api.StatusDone || j.RunnerName != "r2" || j.Attempt != 1 {
			t.Errorf("ps -a --json: %s, job on %q attempt %d; want done on r2 attempt 1 (the second)", run.Status, j.RunnerName, j.Attempt)
		}
		// The second attempt's output follows the first's, after a line
		// of the server's that says which attempt runs where, and why.
		marker := "--- attempt 2 of 3 on runner r2 (attempt 1: runner r1 stopped responding) ---\n"
		if r := c.dstack("", "logs", name); r.code != 0 || r.stdout != "slow started\n"+marker+"slow started\nslow finished\n" {
			t.Errorf("logs:\n%s\nwant stdout:\nslow started\n%sslow started\nslow finished", r, marker)
		}
		if !strings.Contains(follow.stdout(), marker) {
			t.Errorf("dstack run's output does not mark the second attempt with %q:\n%s", marker, follow.stdout())
		}
		status := map[string]api.RunnerStatus{}
		for _, r := range c.runners() {
			status[r.Name] = r.Status
		}
		if status["r1"] != api.RunnerOffline || status["r2"] != api.RunnerOnline {
			t.Errorf("runners: %v, want r1 offline and r2 online", status)
		}
	})
}

// killGroups kills the process groups listed in the file at path, one
// number a line.
func killGroups(path string) {
	b, err := os.ReadFile(path)
	if err != nil {
		return
	}
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
			_ = syscall.Kill(-pid, syscall.SIGKILL)
		}
	}
}
