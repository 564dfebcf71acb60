package cli_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/client"
	"github.com/dstackai/dstack/internal/testutil"
	"github.com/dstackai/dstack/userconfig"
)

// These tests run the commands against a real in-process server
// (servertest), with a scripted runner where a run must progress.

var submittedRe = regexp.MustCompile(`RUN (\S+) submitted`)

// runName picks the run's name out of the output of `dstack run`.
func runName(t *testing.T, r result) string {
	t.Helper()
	m := submittedRe.FindStringSubmatch(r.stdout + r.stderr)
	if m == nil {
		t.Fatalf("no run name in the output of dstack run: %+v", r)
	}
	return m[1]
}

func TestRefusedToken(t *testing.T) {
	t.Parallel()
	h := setup(t)
	srv := h.serve()
	if err := userconfig.Save(h.configPath, &userconfig.Config{Server: srv.URL, Token: "not-a-token"}); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"ps"}, {"logs", "x"}, {"stop", "x"}, {"artifacts", "list", "x"}, {"runners"}} {
		r := h.run(args...)
		if r.code != 1 {
			t.Errorf("%q: exit %d, want 1", args, r.code)
		}
		for _, want := range []string{"refused the token", h.configPath, "dstack config --token TOKEN"} {
			if !strings.Contains(r.stderr, want) {
				t.Errorf("%q: stderr %q does not contain %q", args, r.stderr, want)
			}
		}
	}
	h.writeFile(".dstack/workflows.yaml", testWorkflows)
	if r := h.run("run", "hello"); r.code != 1 || !strings.Contains(r.stderr, "refused the token") {
		t.Errorf("run: %+v", r)
	}

	// A token from the environment is named as such.
	h.vars["DSTACK_TOKEN"] = "also-wrong"
	r := h.run("ps")
	if r.code != 1 || !strings.Contains(r.stderr, "DSTACK_TOKEN") {
		t.Errorf("env token: %+v", r)
	}
}

func TestConfigChecksToken(t *testing.T) {
	t.Parallel()
	h := setup(t)
	srv := h.serve()
	if err := os.Remove(h.configPath); err != nil {
		t.Fatal(err)
	}
	r := h.run("config", "--server", srv.URL, "--token", "wrong")
	if r.code != 1 || !strings.Contains(r.stderr, "refused the token") || !strings.Contains(r.stderr, "--no-check") {
		t.Fatalf("wrong token: %+v", r)
	}
	if _, err := os.Stat(h.configPath); !os.IsNotExist(err) {
		t.Fatalf("a refused token was saved: %v", err)
	}
	r = h.run("config", "--server", srv.URL, "--token", srv.AdminToken)
	if r.code != 0 || !strings.Contains(r.stdout, "as admin") {
		t.Fatalf("right token: %+v", r)
	}
	cfg, err := userconfig.Load(h.configPath)
	if err != nil || cfg.Server != srv.URL || cfg.Token != srv.AdminToken {
		t.Fatalf("saved %+v, %v", cfg, err)
	}
	if r := h.run("ps"); r.code != 0 {
		t.Fatalf("ps after config: %+v", r)
	}
}

func TestRunDetachedWithVariables(t *testing.T) {
	t.Parallel()
	h := setup(t)
	srv := h.serve()
	h.writeFile(".dstack/workflows.yaml", testWorkflows)
	h.writeFile("train.py", "print('hi')\n")

	r := h.run("run", "train", "--epochs", "20", "--lr=0.5", "-d")
	if r.code != 0 {
		t.Fatalf("%+v", r)
	}
	name := runName(t, r)
	if !strings.HasPrefix(r.stdout, "RUN "+name+" submitted") || !strings.Contains(r.stderr, "dstack logs "+name+" -f") {
		t.Fatalf("output: %+v", r)
	}
	run, err := srv.Client().RunGet(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	if run.Workflow != "train" || len(run.Jobs) != 2 || run.Jobs[0].Workflow != "prepare" || run.Jobs[1].Workflow != "train" {
		t.Fatalf("run %+v", run)
	}
	spec := run.Jobs[1].Spec
	if spec.Variables["epochs"] != "20" || spec.Variables["lr"] != "0.5" {
		t.Fatalf("variables %v", spec.Variables)
	}
	if len(spec.Commands) != 1 || spec.Commands[0] != "echo training for 20 epochs at 0.5" {
		t.Fatalf("commands %q", spec.Commands)
	}

	// ps shows it, as a table and as JSON.
	r = h.run("ps")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "RUN") || !strings.Contains(r.stdout, name) || !strings.Contains(r.stdout, "train") {
		t.Fatalf("ps: %+v", r)
	}
	for _, h := range []string{"WORKFLOW", "STATUS", "RUNNER", "SUBMITTED", "DURATION"} {
		if !strings.Contains(r.stdout, h) {
			t.Errorf("ps has no %s column", h)
		}
	}
	r = h.run("status", "-a", "--json")
	var runs []api.Run
	if err := json.Unmarshal([]byte(r.stdout), &runs); err != nil || r.code != 0 {
		t.Fatalf("ps --json: %v, %+v", err, r)
	}
	if len(runs) != 1 || runs[0].Name != name || len(runs[0].Jobs) != 2 {
		t.Fatalf("ps --json: %+v", runs)
	}
}

func TestRunFollowsToTheEnd(t *testing.T) {
	t.Parallel()
	h := setup(t)
	srv := h.serve()
	h.writeFile(".dstack/workflows.yaml", testWorkflows)
	startRunner(t, srv, "r1", map[string]*jobScript{
		"prepare": {logs: []string{"preparing", "prepared"}},
		"train":   {logs: []string{"epoch 1", "epoch 2"}},
	})
	r := h.run("run", "train", "--epochs", "2")
	if r.code != 0 {
		t.Fatalf("%+v", r)
	}
	if r.stdout != "preparing\nprepared\nepoch 1\nepoch 2\n" {
		t.Fatalf("stdout %q", r.stdout)
	}
	name := runName(t, r)
	for _, want := range []string{"==> prepare (job 1/2)", "==> train (job 2/2)", "RUN " + name + " done"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr %q does not contain %q", r.stderr, want)
		}
	}
	if strings.Index(r.stderr, "==> prepare") > strings.Index(r.stderr, "==> train") {
		t.Errorf("headers out of order: %q", r.stderr)
	}

	// A single job has no header.
	r = h.run("run", "hello")
	if r.code != 0 || strings.Contains(r.stderr, "==>") {
		t.Fatalf("hello: %+v", r)
	}
}

func TestRunExitCodeIsTheJobs(t *testing.T) {
	t.Parallel()
	h := setup(t)
	srv := h.serve()
	h.writeFile(".dstack/workflows.yaml", testWorkflows)
	startRunner(t, srv, "r1", map[string]*jobScript{
		"prepare": {logs: []string{"ok"}},
		"train":   {logs: []string{"diverged"}, exitCode: 3},
	})
	r := h.run("run", "train")
	if r.code != 3 {
		t.Fatalf("exit code %d, want 3: %+v", r.code, r)
	}
	if !strings.Contains(r.stderr, "Error: run ") || !strings.Contains(r.stderr, "train exited with code 3") {
		t.Fatalf("stderr %q", r.stderr)
	}
	if !strings.Contains(r.stdout, "diverged") {
		t.Fatalf("stdout %q", r.stdout)
	}
}

func TestRunInterruptStopsFollowingOnly(t *testing.T) {
	t.Parallel()
	h := setup(t)
	srv := h.serve()
	h.writeFile(".dstack/workflows.yaml", testWorkflows)
	started := make(chan struct{})
	startRunner(t, srv, "r1", map[string]*jobScript{
		"hello": {logs: []string{"hello"}, untilStopped: true, started: started},
	})
	// Ctrl-C comes once the job has written its logs.
	h.interrupt = func(ctx context.Context) (context.Context, context.CancelFunc) {
		ictx, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-started:
				cancel()
			case <-ictx.Done():
			}
		}()
		return ictx, cancel
	}
	r := h.run("run", "hello")
	if r.code != 130 {
		t.Fatalf("exit code %d, want 130: %+v", r.code, r)
	}
	name := runName(t, r)
	for _, want := range []string{"Stopped following run " + name, "dstack logs " + name + " -f", "dstack stop " + name} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr %q does not contain %q", r.stderr, want)
		}
	}
	run, err := srv.Client().RunGet(context.Background(), name)
	if err != nil || run.Status.Finished() {
		t.Fatalf("the run should go on: %+v, %v", run, err)
	}

	h.interrupt = nil
	r = h.run("stop", name)
	if r.code != 0 || !strings.Contains(r.stdout, "RUN "+name) {
		t.Fatalf("stop: %+v", r)
	}
	// logs -f returns once the run has ended.
	r = h.run("logs", name, "-f")
	if r.code != 0 || r.stdout != "hello\n" || !strings.Contains(r.stderr, "RUN "+name+" stopped") {
		t.Fatalf("logs -f: %+v", r)
	}
	r = h.run("ps", "-a")
	if !regexp.MustCompile(name + `\s+hello\s+stopped\s+r1`).MatchString(r.stdout) {
		t.Fatalf("ps -a: %q", r.stdout)
	}
}

func TestRunSaysWhyItWaits(t *testing.T) {
	t.Parallel()
	h := setup(t)
	h.serve() // and no runner
	h.writeFile(".dstack/workflows.yaml", testWorkflows)
	h.interruptWhen("is waiting")
	r := h.run("run", "hello")
	if r.code != 130 || !strings.Contains(r.stderr, "==> hello is waiting: no runner is registered: start one with dstack-runner start") {
		t.Fatalf("%+v", r)
	}
}

// A job that no runner can ever take says why in `dstack ps`, and `dstack
// run` says it too.
func TestPsSaysWhyNoRunnerFits(t *testing.T) {
	t.Parallel()
	h := setup(t)
	srv := h.serve()
	startRunner(t, srv, "gpu-box", nil) // 4 CPUs, 8 GiB, a T4
	h.writeFile(".dstack/workflows.yaml", `workflows:
  - name: big
    provider: bash
    commands: [echo big]
    resources:
      cpu: 64
  - name: a100
    provider: bash
    commands: [echo a100]
    resources:
      gpu: {count: 1, name: A100}
`)
	big := runName(t, h.run("run", "-d", "big"))
	a100 := runName(t, h.run("run", "-d", "a100"))
	wants := []string{
		big + " big is pending: no runner has 64 CPUs (the largest has 4); add a runner that does, or lower resources",
		a100 + ` a100 is pending: no runner has a GPU matching "A100" (runners have T4)`,
	}
	testutil.EventuallyErr(t, "ps to say why the runs wait", func() error {
		r := h.run("ps")
		for _, w := range wants {
			if !strings.Contains(r.stdout, w) {
				return fmt.Errorf("ps does not say %q: %+v", w, r)
			}
		}
		if r.code != 0 {
			return fmt.Errorf("ps failed: %+v", r)
		}
		return nil
	})

	h.interruptWhen("is waiting")
	r := h.run("run", "big")
	if r.code != 130 || !strings.Contains(r.stderr, "==> big is waiting: no runner has 64 CPUs (the largest has 4)") {
		t.Fatalf("%+v", r)
	}
}

func TestStopAbort(t *testing.T) {
	t.Parallel()
	h := setup(t)
	srv := h.serve()
	h.writeFile(".dstack/workflows.yaml", testWorkflows)
	started := make(chan struct{})
	startRunner(t, srv, "r1", map[string]*jobScript{
		"hello": {logs: []string{"hi"}, untilStopped: true, started: started, artifacts: map[string][]byte{"out.txt": []byte("x")}},
	})
	name := runName(t, h.run("run", "-d", "hello"))
	<-started
	r := h.run("stop", name, "--abort")
	if r.code != 0 {
		t.Fatalf("stop --abort: %+v", r)
	}
	run := waitRun(t, srv.Client(), name)
	if run.Status != api.StatusAborted {
		t.Fatalf("status %s, want aborted", run.Status)
	}
	// Aborted: no artifacts were uploaded.
	if r := h.run("artifacts", "list", name); r.code != 0 || !strings.Contains(r.stderr, "has no artifacts") {
		t.Fatalf("artifacts list: %+v", r)
	}
}

func TestUnknownRun(t *testing.T) {
	t.Parallel()
	h := setup(t)
	h.serve()
	for _, args := range [][]string{{"logs", "nope"}, {"stop", "nope"}, {"artifacts", "list", "nope"}, {"artifacts", "download", "nope"}} {
		r := h.run(args...)
		if r.code != 1 || !strings.Contains(r.stderr, `no run "nope"`) || !strings.Contains(r.stderr, "dstack ps -a") {
			t.Errorf("%q: %+v", args, r)
		}
	}
}

func TestEmptyLists(t *testing.T) {
	t.Parallel()
	h := setup(t)
	h.serve()
	for _, args := range [][]string{{"ps", "--json"}, {"ps", "-a", "--json"}, {"runners", "--json"}} {
		r := h.run(args...)
		if r.code != 0 || strings.TrimSpace(r.stdout) != "[]" {
			t.Errorf("%q: %+v", args, r)
		}
	}
	if r := h.run("ps"); r.code != 0 || r.stdout != "" || !strings.Contains(r.stderr, "dstack run WORKFLOW") {
		t.Errorf("ps: %+v", r)
	}
	if r := h.run("runners"); r.code != 0 || !strings.Contains(r.stderr, "dstack-runner") {
		t.Errorf("runners: %+v", r)
	}
}

func TestRunners(t *testing.T) {
	t.Parallel()
	h := setup(t)
	srv := h.serve()
	startRunner(t, srv, "gpu-box", nil)
	r := h.run("runners")
	if r.code != 0 {
		t.Fatalf("%+v", r)
	}
	if !regexp.MustCompile(`NAME\s+HOST\s+STATUS\s+CPU\s+MEMORY\s+GPU\s+DISK\s+JOB`).MatchString(r.stdout) {
		t.Fatalf("header: %q", r.stdout)
	}
	if !regexp.MustCompile(`gpu-box\s+gpu-box\.local\s+online\s+4\s+8 GiB\s+1xT4 \(16 GiB\)\s+100 GiB\s+-`).MatchString(r.stdout) {
		t.Fatalf("row: %q", r.stdout)
	}
	r = h.run("runners", "--json")
	var rs []api.Runner
	if err := json.Unmarshal([]byte(r.stdout), &rs); err != nil || len(rs) != 1 || rs[0].Name != "gpu-box" || rs[0].Resources.CPUs != 4 {
		t.Fatalf("runners --json: %v %+v", err, rs)
	}
}

func TestLogs(t *testing.T) {
	t.Parallel()
	h := setup(t)
	srv := h.serve()
	h.writeFile(".dstack/workflows.yaml", testWorkflows)
	startRunner(t, srv, "r1", map[string]*jobScript{
		"prepare": {logs: []string{"p1", "p2"}},
		"train":   {logs: []string{"t1"}},
	})
	name := runName(t, h.run("run", "-d", "train"))
	waitRun(t, srv.Client(), name)

	r := h.run("logs", name)
	if r.code != 0 || r.stdout != "p1\np2\nt1\n" || !strings.Contains(r.stderr, "==> prepare (job 1/2)") {
		t.Fatalf("logs: %+v", r)
	}
	r = h.run("logs", name, "--since", "1h")
	if r.code != 0 || r.stdout != "p1\np2\nt1\n" {
		t.Fatalf("logs --since 1h: %+v", r)
	}
	future := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	r = h.run("logs", name, "--since", future)
	if r.code != 0 || r.stdout != "" {
		t.Fatalf("logs --since the future: %+v", r)
	}
	r = h.run("logs", name, "-f")
	if r.code != 0 || r.stdout != "p1\np2\nt1\n" || !strings.Contains(r.stderr, "RUN "+name+" done") {
		t.Fatalf("logs -f: %+v", r)
	}
}

func TestLogIncomplete(t *testing.T) {
	t.Parallel()
	h := setup(t)
	srv := h.serve()
	h.writeFile(".dstack/workflows.yaml", testWorkflows)
	script := &jobScript{logs: []string{"stored"}, unsent: []string{"late 1", "late 2"}, send: make(chan func(context.Context) error, 1)}
	startRunner(t, srv, "r1", map[string]*jobScript{"hello": script})
	r := h.run("run", "hello")
	const mark = "log incomplete: 14 bytes not stored"
	if r.code != 0 || r.stdout != "stored\n" || !strings.Contains(r.stderr, "hello: "+mark) {
		t.Fatalf("run: %+v", r)
	}
	name := runName(t, r)
	r = h.run("ps")
	if r.code != 0 || !strings.Contains(r.stdout, "done (log incomplete)") || !strings.Contains(r.stdout, name+" hello: "+mark) {
		t.Fatalf("ps: %+v", r)
	}
	r = h.run("ps", "--json")
	if r.code != 0 || !strings.Contains(r.stdout, `"log_missing": 14`) {
		t.Fatalf("ps --json: %+v", r)
	}
	r = h.run("logs", name)
	if r.code != 0 || r.stdout != "stored\n" || !strings.Contains(r.stderr, mark) {
		t.Fatalf("logs: %+v", r)
	}

	// The runner sends the rest: the log is whole, the mark gone.
	if err := (<-script.send)(context.Background()); err != nil {
		t.Fatalf("send the rest of the log: %v", err)
	}
	r = h.run("logs", name)
	if r.code != 0 || r.stdout != "stored\nlate 1\nlate 2\n" || strings.Contains(r.stderr, "log incomplete") {
		t.Fatalf("logs once complete: %+v", r)
	}
	r = h.run("ps")
	if r.code != 0 || strings.Contains(r.stdout, "log incomplete") || !strings.Contains(r.stdout, "done") {
		t.Fatalf("ps once complete: %+v", r)
	}
}

func TestCodeTooLarge(t *testing.T) {
	t.Parallel()
	h := setup(t)
	h.serve()
	h.writeFile(".dstack/workflows.yaml", testWorkflows)
	h.writeFile("data.bin", strings.Repeat("x", 4096))
	r := h.run("run", "--max-code-size", "1KiB", "hello")
	if r.code != 1 || !strings.Contains(r.stderr, ".dstackignore") || !strings.Contains(r.stderr, "--max-code-size") {
		t.Fatalf("%+v", r)
	}
	h.vars["DSTACK_MAX_CODE_SIZE"] = "1k"
	if r := h.run("run", "-d", "hello"); r.code != 1 || !strings.Contains(r.stderr, ".dstackignore") {
		t.Fatalf("env: %+v", r)
	}
	// The flag wins over the environment.
	if r := h.run("run", "--max-code-size", "1MiB", "-d", "hello"); r.code != 0 {
		t.Fatalf("flag: %+v", r)
	}
}

func TestArtifacts(t *testing.T) {
	t.Parallel()
	h := setup(t)
	srv := h.serve()
	h.writeFile(".dstack/workflows.yaml", testWorkflows)
	weights := make([]byte, 1<<20+123)
	_, _ = rand.Read(weights)
	startRunner(t, srv, "r1", map[string]*jobScript{
		"prepare": {artifacts: map[string][]byte{"data/numbers.txt": []byte("1\n2\n3\n")}},
		"train":   {artifacts: map[string][]byte{"model/weights.bin": weights, "model/result.txt": []byte("sum=6\n")}},
	})
	name := runName(t, h.run("run", "-d", "train"))
	waitRun(t, srv.Client(), name)

	r := h.run("artifacts", "list", name)
	if r.code != 0 {
		t.Fatalf("%+v", r)
	}
	for _, re := range []string{`WORKFLOW\s+PATH\s+SIZE`, `prepare\s+data/numbers\.txt\s+6 B`, `train\s+model/weights\.bin\s+1\.0 MiB`, `train\s+model/result\.txt\s+6 B`} {
		if !regexp.MustCompile(re).MatchString(r.stdout) {
			t.Errorf("artifacts list does not match %s:\n%s", re, r.stdout)
		}
	}
	r = h.run("artifacts", "list", name, "--json")
	var files []api.ArtifactFile
	if err := json.Unmarshal([]byte(r.stdout), &files); err != nil || len(files) != 3 {
		t.Fatalf("--json: %v %+v", err, files)
	}

	want := map[string][]byte{
		filepath.Join("prepare", "data", "numbers.txt"): []byte("1\n2\n3\n"),
		filepath.Join("train", "model", "weights.bin"):  weights,
		filepath.Join("train", "model", "result.txt"):   []byte("sum=6\n"),
	}
	check := func(dir string) {
		t.Helper()
		for rel, content := range want {
			got, err := os.ReadFile(filepath.Join(dir, rel))
			if err != nil || !bytes.Equal(got, content) {
				t.Errorf("%s: %d bytes, %v; want %d bytes", rel, len(got), err, len(content))
			}
			if _, err := os.Stat(filepath.Join(dir, rel+".part")); !os.IsNotExist(err) {
				t.Errorf("%s.part left behind", rel)
			}
		}
	}

	// Into the current directory by default.
	r = h.run("artifacts", "download", name)
	if r.code != 0 || !strings.Contains(r.stderr, "Downloaded 3 files") {
		t.Fatalf("download: %+v", r)
	}
	check(h.dir)

	table := h.run("artifacts", "list", name).stdout
	for _, f := range files {
		if f.SHA256 == "" || !strings.Contains(table, f.SHA256) {
			t.Errorf("%s: listed without its SHA-256 (%+v)", f.Path, f)
		}
	}
	tagOf := func(path string) string {
		t.Helper()
		for _, f := range files {
			if f.Path == path {
				a, err := srv.Client().ArtifactGet(context.Background(), f.JobID, f.Path, client.ArtifactRequest{})
				if err != nil {
					t.Fatal(err)
				}
				a.Body.Close()
				return a.ETag
			}
		}
		t.Fatalf("%s is not listed", path)
		return ""
	}

	// Resume: a .part holding the first bytes of the same file (its
	// .part.etag says so) is completed, not restarted; a .part longer than
	// the file is restarted; a .part of another file (another tag, or none)
	// is not resumed.
	out := filepath.Join(h.dir, "out")
	write := func(name string, b []byte) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(name, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	wpath := filepath.Join(out, "train", "model", "weights.bin")
	write(wpath+".part", weights[:300000])
	write(wpath+".part.etag", []byte(tagOf("model/weights.bin")+"\n"))
	npath := filepath.Join(out, "prepare", "data", "numbers.txt")
	write(npath+".part", []byte("garbage that is longer than the file"))
	write(npath+".part.etag", []byte(tagOf("data/numbers.txt")+"\n"))
	rpath := filepath.Join(out, "train", "model", "result.txt")
	write(rpath+".part", []byte("sum="))
	write(rpath+".part.etag", []byte(`"sha256:0123"`+"\n"))
	r = h.run("artifacts", "download", name, "-o", "out")
	if r.code != 0 || !strings.Contains(r.stdout, "resumed at 293 KiB") || strings.Count(r.stdout, "resumed") != 1 {
		t.Fatalf("resume: %+v", r)
	}
	check(out)
	for _, p := range []string{wpath, npath, rpath} {
		if _, err := os.Stat(p + ".part.etag"); !os.IsNotExist(err) {
			t.Errorf("%s.part.etag left behind", p)
		}
	}

	// Again: everything is there already.
	r = h.run("artifacts", "download", name, "-o", out)
	if r.code != 0 || strings.Count(r.stdout, "already downloaded") != 3 {
		t.Fatalf("again: %+v", r)
	}
	// A file of the right size but other content is replaced, not kept.
	write(npath, []byte("9\n9\n9\n"))
	r = h.run("artifacts", "download", name, "-o", out)
	if r.code != 0 || strings.Count(r.stdout, "already downloaded") != 2 {
		t.Fatalf("a file of the same size: %+v", r)
	}
	check(out)
	// A .part of the same file whose bytes were damaged fails the check at
	// the end: an error names the file, and the .part is removed.
	bad := append([]byte(nil), weights[:300000]...)
	bad[10] ^= 0xff
	if err := os.Remove(wpath); err != nil {
		t.Fatal(err)
	}
	write(wpath+".part", bad)
	write(wpath+".part.etag", []byte(tagOf("model/weights.bin")+"\n"))
	r = h.run("artifacts", "download", name, "-o", out)
	if r.code == 0 || !strings.Contains(r.stderr, "download train/model/weights.bin: the file received has SHA-256") {
		t.Fatalf("a damaged .part: %+v", r)
	}
	if _, err := os.Stat(wpath + ".part"); !os.IsNotExist(err) {
		t.Errorf("the damaged .part was kept (%v)", err)
	}
	if r = h.run("artifacts", "download", name, "-o", out); r.code != 0 {
		t.Fatalf("after a damaged .part: %+v", r)
	}
	check(out)

	// On a terminal, progress bars instead of lines.
	h.tty = true
	tdir := filepath.Join(t.TempDir(), "tty")
	r = h.run("artifacts", "download", name, "-o", tdir)
	if r.code != 0 {
		t.Fatalf("tty: %+v", r)
	}
	check(tdir)
}
