package e2e

import (
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/dstackai/dstack/internal/testutil"
)

// gated is a job that prints a line, waits for the gate file the test
// creates, prints another and exits with code 7. Its process group is noted
// in pids, to be killed at the end.
func gated(gate, pids string) map[string]string {
	return map[string]string{".dstack/workflows.yaml": `workflows:
  - name: gated
    provider: bash
    commands:
      - echo "gated started"
      - echo $$ >> '` + pids + `'
      - i=0; while [ ! -e '` + gate + `' ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
      - echo "gated finished"
      - exit 7
`}
}

// startGated starts `dstack run` of the gated job with the extra arguments
// before its name and waits for the job's first line. It returns the
// follower, the run's name and the gate to open.
func (c *cluster) startGated(t *testing.T, args ...string) (follow *proc, name, gate string) {
	t.Helper()
	scratch := t.TempDir()
	pids := filepath.Join(scratch, "pids")
	gate = filepath.Join(scratch, "gate")
	t.Cleanup(func() { killGroups(pids) })
	follow = c.startDstack(project(t, gated(gate, pids)), append(append([]string{"run"}, args...), "gated")...)
	testutil.EventuallyWithin(t, waitTimeout, "the job to start", func() bool {
		return strings.Contains(follow.stdout(), "gated started") || follow.exited()
	})
	if follow.exited() {
		t.Fatalf("dstack run ended early:\n%s", follow.output())
	}
	m := runRe.FindStringSubmatch(follow.stderr())
	if m == nil {
		t.Fatalf("dstack run did not name its run:\n%s", follow.output())
	}
	return follow, m[1], gate
}

// startServerAgain starts the server on its port after it went away.
func (c *cluster) startServerAgain(t *testing.T) {
	t.Helper()
	u, err := url.Parse(c.URL)
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.Atoi(u.Port())
	if err != nil {
		t.Fatalf("server URL %s: %v", c.URL, err)
	}
	c.startServer(port)
}

// TestRunGivesUpOnALostServer: the server dies while `dstack run` follows a
// run. The command says once that the run goes on and how to follow it
// again, keeps trying for --wait-server, then exits with code 3.
func TestRunGivesUpOnALostServer(t *testing.T) {
	eachDB(t, func(t *testing.T, dsn string) {
		c := newCluster(t, dsn)
		c.startRunner("r1")
		follow, name, gate := c.startGated(t, "--wait-server", "3s")

		if err := c.server.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		c.server.wait(t, stopTimeout)
		code := follow.wait(t, waitTimeout)
		stderr := follow.stderr()
		if code != 3 {
			t.Errorf("dstack run exited with code %d, want 3:\n%s", code, follow.output())
		}
		for _, want := range []string{
			"Lost the dstack server: ",
			"Run " + name + " goes on without this command",
			"`dstack logs " + name + " -f` follows it again later",
			"Error: gave up on the dstack server at " + c.URL,
		} {
			if !strings.Contains(stderr, want) {
				t.Errorf("dstack run's stderr does not say %q:\n%s", want, stderr)
			}
		}
		if n := strings.Count(stderr, "goes on without this command"); n != 1 {
			t.Errorf("dstack run said %d times that the run goes on, want once:\n%s", n, stderr)
		}

		// The run did go on: with the server back, it ends as the job does.
		c.startServerAgain(t)
		if err := os.WriteFile(gate, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		r := c.dstack("", "logs", name, "-f")
		if r.code != 0 || r.stdout != "gated started\ngated finished\n" {
			t.Errorf("logs -f after the server came back:\n%s", r)
		}
	})
}

// TestRunOutlivesAServerRestart: the server stops while `dstack run`
// follows a run, and comes back within --wait-server: the command picks the
// logs up where they stopped and exits with the run's exit code.
func TestRunOutlivesAServerRestart(t *testing.T) {
	eachDB(t, func(t *testing.T, dsn string) {
		c := newCluster(t, dsn)
		c.startRunner("r1")
		follow, name, gate := c.startGated(t, "--wait-server", "2m")

		c.stopServer()
		testutil.EventuallyWithin(t, waitTimeout, "dstack run to say the run goes on", func() bool {
			return strings.Contains(follow.stderr(), "goes on without this command") || follow.exited()
		})
		if follow.exited() {
			t.Fatalf("dstack run ended while the server was away:\n%s", follow.output())
		}
		// The job ends while the server is away; its runner keeps the rest.
		if err := os.WriteFile(gate, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		c.startServerAgain(t)

		if code := follow.wait(t, waitTimeout); code != 7 {
			t.Errorf("dstack run exited with code %d, want the job's 7:\n%s", code, follow.output())
		}
		if out := follow.stdout(); out != "gated started\ngated finished\n" {
			t.Errorf("dstack run printed\n%s\nwant each line once", out)
		}
		stderr := follow.stderr()
		for _, want := range []string{"Reached the dstack server again; following run " + name, "run " + name + " failed", "exited with code 7"} {
			if !strings.Contains(stderr, want) {
				t.Errorf("dstack run's stderr does not say %q:\n%s", want, stderr)
			}
		}
	})
}
