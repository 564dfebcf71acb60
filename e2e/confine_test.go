package e2e

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/executor/executortest"
)

// TestJobConfinedToItsDirectory: a job's symbolic links do not take the
// runner outside the job's directory. A job that links the runner's data
// directory and lists it as an artifact fails, naming the link, and the
// runner's state (its credential) never reaches the server; a link out
// inside an artifact directory is left out with a note in the log; code
// that holds a link to a directory of the host is refused before anything
// is written through it. The runner keeps its own files private, its jobs'
// directories apart.
func TestJobConfinedToItsDirectory(t *testing.T) {
	eachDB(t, func(t *testing.T, dsn string) {
		c := newCluster(t, dsn)
		c.startRunner("r1")
		data := filepath.Join(c.dir, "runner-r1") // the runner's --data-dir
		outside := filepath.Join(t.TempDir(), "host-dir")
		if err := os.Mkdir(outside, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(outside, "numbers.txt"), []byte("the host's\n"), 0o644); err != nil {
			t.Fatal(err)
		}

		// The runner's own files are private; the jobs' directories are apart.
		for p, want := range map[string]fs.FileMode{data: 0o700, filepath.Join(data, "state.json"): 0o600,
			filepath.Join(c.dir, "runner-r1.yaml"): 0o600, data + "-work": 0o700} {
			if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != want {
				t.Errorf("%s: %v, %v; want mode %v", p, fi, err, want)
			}
		}

		dir := project(t, map[string]string{".dstack/workflows.yaml": `workflows:
  - name: leak
    provider: bash
    commands:
      - ln -s ` + data + ` lnk
      - pwd
    artifacts: [lnk/state.json]
  - name: leaf
    provider: bash
    commands:
      - mkdir out && echo mine > out/w.txt
      - ln -s ` + data + `/state.json out/cred
    artifacts: [out]
`})
		r := c.dstack(dir, "run", "leak")
		if r.code == 0 {
			t.Fatalf("the run that links the runner's data directory succeeded:\n%s", r)
		}
		name := runName(t, r.stderr)
		j := c.run(name).Jobs[0]
		if j.Status != api.StatusFailed || !strings.Contains(j.StatusReason, `"lnk/state.json" goes through the symbolic link "lnk" to "`+data+`", outside the job's directory`) {
			t.Errorf("job %s (%q), want failed naming the link", j.Status, j.StatusReason)
		}
		if pwd := strings.TrimSpace(r.stdout); strings.HasPrefix(pwd, data+string(filepath.Separator)) || !strings.HasPrefix(pwd, data+"-work"+string(filepath.Separator)) {
			t.Errorf("the job ran in %q, want a directory under %s-work", pwd, data)
		}
		if r := c.dstack("", "artifacts", "list", name); strings.Contains(r.stdout, "state.json") {
			t.Errorf("the runner's state was uploaded:\n%s", r)
		}

		r = c.dstack(dir, "run", "leaf")
		if r.code != 0 {
			t.Fatalf("%s", r)
		}
		if want := `artifact out/cred left out: a symbolic link to "` + data + `/state.json", outside the job's directory`; !strings.Contains(r.stdout+r.stderr, want) {
			t.Errorf("dstack run does not say %q:\n%s", want, r)
		}
		name = runName(t, r.stderr)
		if r := c.dstack("", "artifacts", "list", name); !strings.Contains(r.stdout, "out/w.txt") || strings.Contains(r.stdout, "out/cred") {
			t.Errorf("artifacts list: want out/w.txt only:\n%s", r)
		}

		// Code holding data -> a directory of the host: a dependency's
		// artifact data/numbers.txt would be written there.
		dir = project(t, pipeline)
		if err := os.RemoveAll(filepath.Join(dir, "data")); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(outside, filepath.Join(dir, "data")); err != nil {
			t.Fatal(err)
		}
		r = c.dstack(dir, "run", "train", "--epochs", "1")
		if r.code == 0 {
			t.Fatalf("the run whose code links a host directory succeeded:\n%s", r)
		}
		name = runName(t, r.stderr)
		j = c.run(name).Jobs[0]
		if j.Status != api.StatusFailed || !strings.Contains(j.StatusReason, `"data" is a symbolic link to "`+outside+`", outside the job's directory`) {
			t.Errorf("job %s %s (%q), want failed naming the link", j.Workflow, j.Status, j.StatusReason)
		}
		if got := readFile(t, filepath.Join(outside, "numbers.txt")); got != "the host's\n" {
			t.Errorf("the host's file was overwritten: %q", got)
		}
		if des, _ := os.ReadDir(outside); len(des) != 1 {
			t.Errorf("the host's directory holds %v", des)
		}
	})
}

// TestJobConfinedOnDocker: the same from a container, which cannot see the
// host's paths but can make links to them in its mounted directory.
func TestJobConfinedOnDocker(t *testing.T) {
	eachDB(t, func(t *testing.T, dsn string) {
		executortest.RequireDocker(t)
		c := newCluster(t, dsn)
		c.startRunner("r1")
		data := filepath.Join(c.dir, "runner-r1")
		dir := project(t, map[string]string{".dstack/workflows.yaml": `workflows:
  - name: leak
    provider: docker
    image: ` + executortest.Image + `
    commands:
      - ln -s ` + data + ` lnk
      - test ! -e lnk/state.json && echo the container cannot see it
    artifacts: [lnk/state.json]
  - name: leaf
    provider: docker
    image: ` + executortest.Image + `
    commands:
      - mkdir out && echo mine > out/w.txt
      - ln -s ` + data + `/state.json out/cred
    artifacts: [out]
`})
		r := c.dstack(dir, "run", "leak")
		if r.code == 0 || !strings.Contains(r.stdout, "the container cannot see it") {
			t.Fatalf("the run that links the runner's data directory: want it to run and fail:\n%s", r)
		}
		name := runName(t, r.stderr)
		if j := c.run(name).Jobs[0]; j.Status != api.StatusFailed || !strings.Contains(j.StatusReason, `goes through the symbolic link "lnk" to "`+data+`"`) {
			t.Errorf("job %s (%q), want failed naming the link", j.Status, j.StatusReason)
		}
		if r := c.dstack("", "artifacts", "list", name); strings.Contains(r.stdout, "state.json") {
			t.Errorf("the runner's state was uploaded:\n%s", r)
		}
		r = c.dstack(dir, "run", "leaf")
		if r.code != 0 || !strings.Contains(r.stdout+r.stderr, "artifact out/cred left out") {
			t.Fatalf("%s", r)
		}
		name = runName(t, r.stderr)
		if r := c.dstack("", "artifacts", "list", name); !strings.Contains(r.stdout, "out/w.txt") || strings.Contains(r.stdout, "out/cred") {
			t.Errorf("artifacts list: want out/w.txt only:\n%s", r)
		}
	})
}
