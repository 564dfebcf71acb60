package e2e

import (
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/internal/testutil"
)

// pipeline is a project of two workflows: train depends on prepare's
// artifacts and has a variable. secret.txt is in .gitignore, so it is not
// uploaded.
var pipeline = map[string]string{
	".dstack/workflows.yaml": `workflows:
  - name: prepare
    provider: bash
    commands:
      - echo "prepare read $(cat input.txt)"
      - mkdir -p data
      - printf '1\n2\n3\n' > data/numbers.txt
      - echo "prepare wrote data/numbers.txt"
    artifacts: [data]

  - name: train
    provider: bash
    depends-on: [prepare]
    variables:
      epochs: 10
    commands:
      - for e in $(seq 1 ${{ epochs }}); do echo "train epoch $e of ${{ epochs }}"; done
      - if [ -e secret.txt ]; then echo "train found secret.txt"; fi
      - mkdir -p model
      - |
        sum=0
        while read n; do sum=$((sum + n)); done < data/numbers.txt
        echo "sum=$sum epochs=${{ epochs }}" > model/result.txt
      - echo "train wrote $(cat model/result.txt)"
    artifacts: [model]
`,
	"input.txt":  "hello from the code",
	".gitignore": "secret.txt\n",
	"secret.txt": "not for the server",
}

// pipelineLog is what `dstack run train --epochs 2` prints on stdout.
const pipelineLog = `prepare read hello from the code
prepare wrote data/numbers.txt
train epoch 1 of 2
train epoch 2 of 2
train wrote sum=6 epochs=2
`

func TestRunPipeline(t *testing.T) {
	eachDB(t, func(t *testing.T, dsn string) {
		c := newCluster(t, dsn)
		c.startRunner("r1")

		r := c.dstack("", "runners")
		if r.code != 0 || !regexp.MustCompile(`(?m)^r1\s+\S+\s+online\s`).MatchString(r.stdout) {
			t.Fatalf("the runner is not listed online:\n%s", r)
		}

		dir := project(t, pipeline)
		r = c.dstack(dir, "run", "train", "--epochs", "2")
		if r.code != 0 {
			t.Fatalf("%s", r)
		}
		if r.stdout != pipelineLog {
			t.Errorf("dstack run printed\n%s\nwant\n%s", r.stdout, pipelineLog)
		}
		name := runName(t, r.stderr)
		for _, want := range []string{"==> prepare (job 1/2)", "==> train (job 2/2)", "RUN " + name + " done"} {
			if !strings.Contains(r.stderr, want) {
				t.Errorf("stderr of dstack run does not say %q:\n%s", want, r.stderr)
			}
		}
		if strings.Index(r.stderr, "==> prepare") > strings.Index(r.stderr, "==> train") {
			t.Errorf("train's header before prepare's:\n%s", r.stderr)
		}

		run := c.run(name)
		if run.Status != api.StatusDone || run.Workflow != "train" || len(run.Jobs) != 2 {
			t.Fatalf("ps -a --json: %+v", run)
		}
		for _, j := range run.Jobs {
			if j.Status != api.StatusDone || j.RunnerName != "r1" {
				t.Errorf("job %s: %s on %q, want done on r1", j.Workflow, j.Status, j.RunnerName)
			}
		}
		r = c.dstack("", "ps", "-a")
		if !regexp.MustCompile(`(?m)^` + name + `\s+train\s+done\s+r1\s`).MatchString(r.stdout) {
			t.Errorf("ps -a:\n%s", r)
		}

		r = c.dstack("", "artifacts", "list", name)
		if r.code != 0 {
			t.Fatalf("%s", r)
		}
		for _, re := range []string{`prepare\s+data/numbers\.txt\s+6 B`, `train\s+model/result\.txt\s+15 B`} {
			if !regexp.MustCompile(re).MatchString(r.stdout) {
				t.Errorf("artifacts list does not match %s:\n%s", re, r.stdout)
			}
		}
		out := filepath.Join(t.TempDir(), "out")
		r = c.dstack(dir, "artifacts", "download", name, "-o", out)
		if r.code != 0 || !strings.Contains(r.stderr, "Downloaded 2 files") {
			t.Fatalf("%s", r)
		}
		for path, want := range map[string]string{
			"prepare/data/numbers.txt": "1\n2\n3\n",
			"train/model/result.txt":   "sum=6 epochs=2\n",
		} {
			if got := readFile(t, filepath.Join(out, filepath.FromSlash(path))); got != want {
				t.Errorf("downloaded %s = %q, want %q", path, got, want)
			}
		}

		r = c.dstack("", "logs", name)
		if r.code != 0 || r.stdout != pipelineLog {
			t.Errorf("logs replayed:\n%s\nwant stdout\n%s", r, pipelineLog)
		}
	})
}

// failing fails with exit code 3 after printing a line.
var failing = map[string]string{".dstack/workflows.yaml": `workflows:
  - name: fail
    provider: bash
    commands:
      - echo "about to fail"
      - exit 3
      - echo "not reached"
`}

func TestRunFails(t *testing.T) {
	eachDB(t, func(t *testing.T, dsn string) {
		c := newCluster(t, dsn)
		c.startRunner("r1")
		r := c.dstack(project(t, failing), "run", "fail")
		if r.code != 3 {
			t.Fatalf("exit code %d, want the job's 3:\n%s", r.code, r)
		}
		if r.stdout != "about to fail\n" || !strings.Contains(r.stderr, "fail exited with code 3") {
			t.Errorf("%s", r)
		}
		name := runName(t, r.stderr)
		run := c.run(name)
		if run.Status != api.StatusFailed || len(run.Jobs) != 1 || run.Jobs[0].ExitCode == nil || *run.Jobs[0].ExitCode != 3 {
			t.Errorf("ps -a --json: %+v", run)
		}
		if r := c.dstack("", "ps", "-a"); !regexp.MustCompile(`(?m)^` + name + `\s+fail\s+failed\s`).MatchString(r.stdout) {
			t.Errorf("ps -a:\n%s", r)
		}
	})
}

// long writes a line and its counter to out/last.txt every 0.1 s for a
// minute, unless stopped; the file is replaced whole, so a stop never finds
// it half written.
var long = map[string]string{".dstack/workflows.yaml": `workflows:
  - name: long
    provider: bash
    commands:
      - mkdir -p out
      - for i in $(seq 1 600); do echo "tick $i"; echo $i > out/next.txt; mv out/next.txt out/last.txt; sleep 0.1; done
    artifacts: [out]
`}

func TestStopAndAbort(t *testing.T) {
	eachDB(t, func(t *testing.T, dsn string) {
		c := newCluster(t, dsn)
		c.startRunner("r1")
		dir := project(t, long)

		// Stop: logs -f sees the lines as they are written, and the
		// artifacts are uploaded.
		r := c.dstack(dir, "run", "-d", "long")
		if r.code != 0 {
			t.Fatalf("%s", r)
		}
		name := runName(t, r.stdout)
		follow := c.startDstack(dir, "logs", name, "-f")
		testutil.EventuallyWithin(t, waitTimeout, "logs -f to print tick 2", func() bool {
			return strings.Contains(follow.stdout(), "tick 2\n") || follow.exited()
		})
		if follow.exited() {
			t.Fatalf("logs -f ended early (exit code %d):\n%s", follow.code(), follow.output())
		}
		if run := c.run(name); run.Status != api.StatusRunning {
			t.Fatalf("logs -f printed tick 2 but the run is %s", run.Status)
		}
		r = c.dstack("", "stop", name)
		if r.code != 0 || !strings.Contains(r.stdout, "RUN "+name) {
			t.Fatalf("%s", r)
		}
		c.waitStatus(name, api.StatusStopped)
		if code := follow.wait(t, waitTimeout); code != 0 || !strings.Contains(follow.stderr(), "RUN "+name+" stopped") {
			t.Errorf("logs -f: exit code %d\n%s", code, follow.output())
		}
		if !strings.HasPrefix(follow.stdout(), "tick 1\ntick 2\n") {
			t.Errorf("logs -f printed:\n%s", follow.stdout())
		}
		out := filepath.Join(t.TempDir(), "out")
		if r := c.dstack("", "artifacts", "download", name, "-o", out); r.code != 0 {
			t.Fatalf("%s", r)
		}
		last, err := strconv.Atoi(strings.TrimSpace(readFile(t, filepath.Join(out, "long", "out", "last.txt"))))
		if err != nil || last < 2 || last >= 600 {
			t.Errorf("out/last.txt of the stopped job: %d, %v; want a tick from 2 to 599", last, err)
		}

		// Abort: no artifacts.
		r = c.dstack(dir, "run", "-d", "long")
		if r.code != 0 {
			t.Fatalf("%s", r)
		}
		name = runName(t, r.stdout)
		testutil.EventuallyWithin(t, waitTimeout, "the second run to write tick 1", func() bool {
			return strings.Contains(c.dstack("", "logs", name).stdout, "tick 1\n")
		})
		if r := c.dstack("", "stop", "--abort", name); r.code != 0 {
			t.Fatalf("%s", r)
		}
		c.waitStatus(name, api.StatusAborted)
		r = c.dstack("", "artifacts", "list", name)
		if r.code != 0 || !strings.Contains(r.stderr, "has no artifacts") {
			t.Errorf("artifacts list of the aborted run:\n%s", r)
		}
		if r := c.dstack("", "ps", "-a"); !regexp.MustCompile(`(?m)^` + name + `\s+long\s+aborted\s`).MatchString(r.stdout) {
			t.Errorf("ps -a:\n%s", r)
		}
	})
}
