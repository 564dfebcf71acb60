package runner

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/executor"
	"github.com/dstackai/dstack/executor/executortest"
)

// These tests run jobs in containers of a real Docker Engine; they skip
// without one (and fail under CI).

// ownerOf is the owner label of a runner's containers.
func ownerOf(t testing.TB, dataDir string) string {
	t.Helper()
	host, _ := os.Hostname()
	dir, err := filepath.Abs(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	return host + ":" + dir
}

func containersOf(t testing.TB, cli *client.Client, owner string) []container.Summary {
	t.Helper()
	list, err := cli.ContainerList(context.Background(), client.ContainerListOptions{All: true, Filters: make(client.Filters).Add("label", executor.LabelOwner+"="+owner)})
	if err != nil {
		t.Fatal(err)
	}
	return list.Items
}

func dockerRunner(t *testing.T, change ...func(*Config)) (*fixture, *client.Client) {
	t.Helper()
	cli := executortest.RequireDocker(t)
	f := setup(t, append([]func(*Config){func(c *Config) { c.Executor = "docker" }}, change...)...)
	if f.r.Executor() != "docker" {
		t.Fatalf("executor %s, want docker", f.r.Executor())
	}
	t.Cleanup(func() {
		if left := containersOf(t, cli, ownerOf(t, f.cfg.DataDir)); len(left) > 0 {
			t.Errorf("%d containers left behind", len(left))
		}
	})
	return f, cli
}

func TestDockerJobs(t *testing.T) {
	t.Parallel()
	f, _ := dockerRunner(t)
	code := f.uploadCode(t, map[string]string{"data.txt": "from the code\n"})
	tests := []struct {
		name          string
		spec          api.JobSpec
		wantStatus    api.JobStatus
		wantCode      *int
		wantReason    string
		wantLog       string
		wantArtifacts map[string]string
	}{
		{"runs in the image", api.JobSpec{
			Provider: "docker", Image: executortest.Image,
			Env:       map[string]string{"EPOCHS": "20"},
			Resources: api.Resources{CPU: 1, MemoryMiB: 256, ShmSizeMiB: 16},
			Commands:  []string{"cat data.txt", "pwd", "echo epochs $EPOCHS >&2", "mkdir model && echo w > model/w.bin"},
			Artifacts: []string{"model"},
		}, api.StatusDone, ptr(0), "", "from the code\n/workflow\nepochs 20\n", map[string]string{"model/w.bin": "w\n"}},
		{"exit code", api.JobSpec{Provider: "docker", Image: executortest.Image, Commands: []string{"echo before", "exit 3"}},
			api.StatusFailed, ptr(3), "exit status 3", "before\n", map[string]string{}},
		{"missing image", api.JobSpec{Provider: "python", Image: "127.0.0.1:1/python:3.12", Commands: []string{"python3 main.py"}},
			api.StatusFailed, nil, `image "127.0.0.1:1/python:3.12" is not on this host and could not be pulled`, "could not be pulled", map[string]string{}},
	}
	// One runner runs them one after the other.
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.spec.Workflow = "w"
			run := f.submit(t, code, tt.spec)
			j := f.waitStatus(t, run.Name, "w", finished)
			log := f.logs(t, j.ID)
			if j.Status != tt.wantStatus || !strings.Contains(j.StatusReason, tt.wantReason) {
				t.Fatalf("status %s (%s), want %s (%s); log:\n%s", j.Status, j.StatusReason, tt.wantStatus, tt.wantReason, log)
			}
			if (j.ExitCode == nil) != (tt.wantCode == nil) || (j.ExitCode != nil && *j.ExitCode != *tt.wantCode) {
				t.Errorf("exit code %s, want %s", fmtExit(j.ExitCode), fmtExit(tt.wantCode))
			}
			if !strings.Contains(log, tt.wantLog) {
				t.Errorf("log %q, want it to contain %q", log, tt.wantLog)
			}
			if got := f.artifacts(t, run.Name, j.ID); !equalMaps(got, tt.wantArtifacts) {
				t.Errorf("artifacts %v, want %v", got, tt.wantArtifacts)
			}
		})
	}
}

func TestDockerStop(t *testing.T) {
	t.Parallel()
	f, _ := dockerRunner(t)
	run := f.submit(t, f.uploadCode(t, nil), api.JobSpec{
		Workflow: "w", Provider: "docker", Image: executortest.Image,
		Commands: []string{
			"trap 'echo got TERM; mkdir -p out; echo saved on TERM > out/partial.txt; exit 5' TERM",
			"echo started",
			"while true; do sleep 0.05; done",
		},
		Artifacts: []string{"out"},
	})
	j := f.waitStatus(t, run.Name, "w", func(s api.JobStatus) bool { return s == api.StatusRunning })
	f.waitLog(t, j.ID, "started")
	if _, err := f.admin.RunStop(context.Background(), run.Name, false); err != nil {
		t.Fatal(err)
	}
	j = f.waitStatus(t, run.Name, "w", finished)
	if j.Status != api.StatusStopped || j.ExitCode == nil || *j.ExitCode != 5 {
		t.Fatalf("status %s (%s), exit code %s; want stopped, 5", j.Status, j.StatusReason, fmtExit(j.ExitCode))
	}
	if got := f.artifacts(t, run.Name, j.ID); got["out/partial.txt"] != "saved on TERM\n" {
		t.Errorf("artifacts %v", got)
	}
}

func TestDockerLeftoversRemovedAtStart(t *testing.T) {
	t.Parallel()
	cli := executortest.RequireDocker(t)
	var left string
	dockerRunner(t, func(c *Config) {
		// A container of a job the runner was running when it died.
		cc := &container.Config{Image: executortest.Image, Entrypoint: []string{"sleep", "1000"},
			Labels: map[string]string{executor.LabelOwner: ownerOf(t, c.DataDir), executor.LabelJobID: "crashed"}}
		created, err := cli.ContainerCreate(context.Background(), client.ContainerCreateOptions{Config: cc})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cli.ContainerStart(context.Background(), created.ID, client.ContainerStartOptions{}); err != nil {
			t.Fatal(err)
		}
		left = created.ID
	})
	if _, err := cli.ContainerInspect(context.Background(), left, client.ContainerInspectOptions{}); err == nil {
		t.Errorf("the runner started with the leftover container %s still there", left[:12])
		_, _ = cli.ContainerRemove(context.Background(), left, client.ContainerRemoveOptions{Force: true})
	}
}

func TestDockerBashRunsOnTheHostWithoutABashImage(t *testing.T) {
	t.Parallel()
	f, _ := dockerRunner(t)
	run := f.submit(t, f.uploadCode(t, nil), api.JobSpec{Workflow: "w", Provider: "bash", Commands: []string{"test ! -d /workflow && echo on the host"}})
	if j := f.waitStatus(t, run.Name, "w", finished); j.Status != api.StatusDone || f.logs(t, j.ID) != "on the host\n" {
		t.Errorf("job %s (%s), log %q", j.Status, j.StatusReason, f.logs(t, j.ID))
	}
}
