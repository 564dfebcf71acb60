package runner

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/executor/executortest"
)

// A job reaches only its own work directory: whatever symbolic links it
// makes, or its code holds, the runner reads and writes nothing outside,
// and the runner's own files (its state, with its credential) never leave
// the host. Each case runs on the shell executor and on the Docker one (a
// container makes links whose targets are paths of the host, which it
// cannot see but the runner could follow).

type confineCase struct {
	name  string
	code  map[string]string // the job's code; "->" makes a link
	jobs  []api.JobSpec     // the run; the last is the one checked
	state api.JobStatus
	// reason is what the status reason contains.
	reason string
	// log is what the job's log contains.
	log string
	// artifacts are the checked job's artifacts, exactly.
	artifacts map[string]string
}

// confineCases are the cases for a runner whose data directory is data,
// and an outside directory of the host, outside.
func confineCases(data, outside string) []confineCase {
	// $DATA is the runner's data directory, the up link reaches it from
	// the job's directory (<work>/<id>) relatively, as a container's
	// link would.
	rel := "../../" + filepath.Base(data)
	return []confineCase{
		{name: "artifact root is a link to the data directory",
			jobs:  []api.JobSpec{{Commands: []string{"ln -s $DATA lnk"}, Artifacts: []string{"lnk"}}},
			state: api.StatusFailed, reason: `"lnk" is a symbolic link to "` + data + `", outside the job's directory`, artifacts: map[string]string{}},
		{name: "intermediate directory is a link to the data directory",
			jobs:  []api.JobSpec{{Commands: []string{"ln -s $DATA lnk"}, Artifacts: []string{"lnk/state.json"}}},
			state: api.StatusFailed, reason: `goes through the symbolic link "lnk"`, artifacts: map[string]string{}},
		{name: "relative link climbing to the data directory",
			jobs:  []api.JobSpec{{Commands: []string{"ln -s " + rel + " up"}, Artifacts: []string{"up/state.json"}}},
			state: api.StatusFailed, reason: `"up" to "` + rel + `"`, artifacts: map[string]string{}},
		{name: "link to a link out",
			jobs:  []api.JobSpec{{Commands: []string{"ln -s $DATA b", "ln -s b a"}, Artifacts: []string{"a/state.json"}}},
			state: api.StatusFailed, reason: `the symbolic link "b"`, artifacts: map[string]string{}},
		{name: "leaf link out is left out, the rest uploaded",
			jobs: []api.JobSpec{{Commands: []string{"mkdir out", "echo w > out/w", "ln -s $DATA/state.json out/cred", "ln -s " + rel + "/state.json out/rel"},
				Artifacts: []string{"out"}}},
			state: api.StatusDone, log: `artifact out/cred left out: a symbolic link to "` + data + `/state.json", outside the job's directory`,
			artifacts: map[string]string{"out/w": "w\n"}},
		{name: "links inside are followed",
			jobs: []api.JobSpec{{Commands: []string{"mkdir -p build/sub", "echo x > build/sub/x", "ln -s build out", "ln -s build/sub/x latest", "ln -s ../../latest build/sub/back"},
				Artifacts: []string{"out", "latest"}}},
			state:     api.StatusDone,
			artifacts: map[string]string{"out/sub/x": "x\n", "out/sub/back": "x\n", "latest": "x\n"}},
		{name: "code with a link out is refused",
			code:  map[string]string{"data": "->" + outside, "run.sh": "echo hi\n"},
			jobs:  []api.JobSpec{{Commands: []string{"echo ran"}}},
			state: api.StatusFailed, reason: `"data" is a symbolic link to "` + outside + `", outside the job's directory`},
		{name: "code with a relative link out is refused",
			code:  map[string]string{"sub/data": "->../../../outside", "run.sh": "echo hi\n"},
			jobs:  []api.JobSpec{{Commands: []string{"echo ran"}}},
			state: api.StatusFailed, reason: `"sub/data" is a symbolic link to "../../../outside"`},
		{name: "dependency artifacts through links inside: a directory link followed and kept, a file link replaced",
			code: map[string]string{"data": "->real", "real/old": "o\n", "numbers.txt": "->other/keep", "other/keep": "k\n"},
			jobs: []api.JobSpec{
				{Workflow: "prepare", Commands: []string{"echo 3 > data/numbers.txt", "echo 2 > numbers.txt"}, Artifacts: []string{"data", "numbers.txt"}},
				{DependsOn: []string{"prepare"}, Commands: []string{"test -L data", "cat real/numbers.txt", "test ! -L numbers.txt", "cat numbers.txt", "cat other/keep"}},
			},
			state: api.StatusDone, log: "3\n2\nk\n", artifacts: map[string]string{}},
	}
}

func runConfineCases(t *testing.T, f *fixture, provider, image string) {
	data, err := filepath.Abs(f.cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	// The runner's own secrets, as a user's config would hold them.
	if err := os.WriteFile(filepath.Join(data, "config.yaml"), []byte("token: the-users-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	outside := filepath.Join(filepath.Dir(data), "outside")
	if err := os.MkdirAll(outside, 0o755); err != nil {
		t.Fatal(err)
	}
	before := snapshotDir(t, outside)
	for _, tt := range confineCases(data, outside) {
		t.Run(tt.name, func(t *testing.T) {
			code := f.uploadCode(t, tt.code)
			for i := range tt.jobs {
				if tt.jobs[i].Workflow == "" {
					tt.jobs[i].Workflow = "w"
				}
				tt.jobs[i].Provider, tt.jobs[i].Image = provider, image
				tt.jobs[i].Env = map[string]string{"DATA": data}
			}
			run := f.submit(t, code, tt.jobs...)
			j := f.waitStatus(t, run.Name, "w", finished)
			log := f.logs(t, j.ID)
			if j.Status != tt.state || !strings.Contains(j.StatusReason, tt.reason) {
				t.Fatalf("job %s (%s), want %s (%s); log:\n%s", j.Status, j.StatusReason, tt.state, tt.reason, log)
			}
			if !strings.Contains(log, tt.log) {
				t.Errorf("log %q, want it to contain %q", log, tt.log)
			}
			if tt.artifacts != nil {
				if got := f.artifacts(t, run.Name, j.ID); !equalMaps(got, tt.artifacts) {
					t.Errorf("artifacts %v, want %v", got, tt.artifacts)
				}
			}
			// Nothing of the runner's left the host, in any job of the run.
			all := f.allArtifacts(t, run.Name)
			for name, content := range all {
				if strings.Contains(content, "token") || strings.Contains(content, f.r.token()) {
					t.Errorf("artifact %s holds the runner's secrets: %q", name, content)
				}
			}
			if got := snapshotDir(t, outside); !equalMaps(got, before) {
				t.Errorf("the outside directory changed: %v", got)
			}
		})
	}
}

// allArtifacts returns every artifact of a run (job/path -> content).
func (f *fixture) allArtifacts(t *testing.T, run string) map[string]string {
	t.Helper()
	r, err := f.admin.RunGet(t.Context(), run)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, j := range r.Jobs {
		for k, v := range f.artifacts(t, run, j.ID) {
			out[j.Workflow+"/"+k] = v
		}
	}
	return out
}

// snapshotDir lists dir's files and their content.
func snapshotDir(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		out[p] = string(b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestConfinementShell(t *testing.T) {
	t.Parallel()
	runConfineCases(t, setup(t), "bash", "")
}

func TestConfinementDocker(t *testing.T) {
	t.Parallel()
	f, _ := dockerRunner(t)
	runConfineCases(t, f, "docker", executortest.Image)
}
