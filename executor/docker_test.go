package executor

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/dstackai/dstack/internal/testutil"
)

// dockerSpec is a docker job of the test image.
func (f fixture) dockerSpec(commands ...string) Spec {
	s := f.spec(commands...)
	s.Provider, s.Image = "docker", testImage
	return s
}

func startOn(t *testing.T, e Executor, spec Spec) Process {
	t.Helper()
	p, err := e.Start(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Kill(); p.Wait() })
	return p
}

func TestDockerJobs(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		provider string
		commands []string
		wantCode int
		wantOut  string
	}{
		{"success", "docker", []string{"echo hello"}, 0, "hello\n"},
		{"exit code", "docker", []string{"exit 3"}, 3, ""},
		{"set -e stops at the first failure", "docker", []string{"echo one", "false", "echo two"}, 1, "one\n"},
		{"command not found", "docker", []string{"no-such-command-dstack"}, 127, ""},
		{"stdout and stderr in order", "docker", []string{"for i in 1 2 3; do echo out$i; echo err$i >&2; done"}, 0, "out1\nerr1\nout2\nerr2\nout3\nerr3\n"},
		{"python runs its commands as given", "python", []string{"echo 'pip install -r requirements.txt'", "echo 'python3 main.py'"}, 0, "pip install -r requirements.txt\npython3 main.py\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d, f := dockerSetup(t, Options{})
			spec := f.dockerSpec(tt.commands...)
			spec.Provider = tt.provider
			res := startOn(t, d, spec).Wait()
			if res.Err != nil || res.ExitCode != tt.wantCode || res.Signal != "" {
				t.Fatalf("result %+v, want exit code %d (output %q)", res, tt.wantCode, f.out.String())
			}
			if tt.wantOut != "" && f.out.String() != tt.wantOut {
				t.Errorf("output %q, want %q", f.out.String(), tt.wantOut)
			}
			if ids := ownedContainers(t, d); len(ids) > 0 {
				t.Errorf("containers left after Wait: %v", ids)
			}
		})
	}
}

func TestDockerEnvAndWorkDir(t *testing.T) {
	t.Parallel()
	d, f := dockerSetup(t, Options{})
	if err := os.WriteFile(filepath.Join(f.dir, "code.txt"), []byte("the code\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	spec := f.dockerSpec(
		"pwd",
		"cat code.txt",
		`echo "$DSTACK_RUN_NAME $DSTACK_JOB_ID $DSTACK_WORKFLOW $EPOCHS"`,
		"mkdir -p model && echo weights > model/weights",
	)
	spec.Env = map[string]string{"EPOCHS": "20 epochs", "DSTACK_JOB_ID": "ignored"}
	res := startOn(t, d, spec).Wait()
	if !res.Success() {
		t.Fatalf("result %+v, output %q", res, f.out.String())
	}
	if got, want := f.out.String(), "/workflow\nthe code\nrun-1 job-1 train 20 epochs\n"; got != want {
		t.Errorf("output %q, want %q", got, want)
	}
	made := filepath.Join(f.dir, "model", "weights")
	st, err := os.Stat(made)
	if err != nil {
		t.Fatalf("what the job wrote is not in the working directory: %v", err)
	}
	if uid := st.Sys().(*syscall.Stat_t).Uid; int(uid) != os.Getuid() {
		t.Errorf("%s belongs to uid %d, want the runner's %d", made, uid, os.Getuid())
	}
	if err := os.RemoveAll(filepath.Join(f.dir, "model")); err != nil {
		t.Errorf("the runner cannot remove what the job wrote: %v", err)
	}
}

func TestDockerUser(t *testing.T) {
	t.Parallel()
	d, f := dockerSetup(t, Options{User: "4321:4321"})
	// A runner's job directories are its own; this one must let uid 4321 in.
	if err := os.Chmod(f.dir, 0o777); err != nil {
		t.Fatal(err)
	}
	res := startOn(t, d, f.dockerSpec("id -u", "id -g", `echo "$HOME"`, "touch made")).Wait()
	if !res.Success() {
		t.Fatalf("result %+v, output %q", res, f.out.String())
	}
	if got, want := f.out.String(), "4321\n4321\n/tmp\n"; got != want {
		t.Errorf("output %q, want %q", got, want)
	}
	st, err := os.Stat(filepath.Join(f.dir, "made"))
	if err != nil {
		t.Fatal(err)
	}
	if sys := st.Sys().(*syscall.Stat_t); sys.Uid != 4321 || sys.Gid != 4321 {
		t.Errorf("the file belongs to %d:%d, want 4321:4321", sys.Uid, sys.Gid)
	}
}

func TestDockerResources(t *testing.T) {
	t.Parallel()
	d, f := dockerSetup(t, Options{})
	spec := f.dockerSpec(
		"cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes",
		"df -k /dev/shm | tail -n 1 | awk '{print $2}'",
		"echo ready",
		"sleep 1000",
	)
	spec.Resources = Resources{CPUs: 1, MemoryMiB: 64, ShmSizeMiB: 32}
	p := startOn(t, d, spec)
	testutil.Eventually(t, "the job to start", func() bool { return strings.Contains(f.out.String(), "ready") })

	res, err := d.cli.ContainerList(context.Background(), client.ContainerListOptions{All: true, Filters: make(client.Filters).Add(
		"label", LabelOwner+"="+d.owner, LabelJobID+"=job-1")})
	list := res.Items
	if err != nil || len(list) != 1 {
		t.Fatalf("the job's container by its labels: %v %v; the job's output so far: %q", list, err, f.out.String())
	}
	inspected, err := d.cli.ContainerInspect(context.Background(), list[0].ID, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	info := inspected.Container
	hc := info.HostConfig
	if hc.NanoCPUs != 1e9 || hc.Memory != 64<<20 || hc.ShmSize != 32<<20 {
		t.Errorf("NanoCPUs %d, Memory %d, ShmSize %d; want 1e9, 64 MiB, 32 MiB", hc.NanoCPUs, hc.Memory, hc.ShmSize)
	}
	if hc.Init == nil || !*hc.Init {
		t.Errorf("the container runs without an init")
	}
	labels := info.Config.Labels
	if labels[LabelRunName] != "run-1" || labels[LabelWorkflow] != "train" {
		t.Errorf("labels %v", labels)
	}
	if info.Config.WorkingDir != WorkflowDir || len(info.Mounts) != 1 || info.Mounts[0].Source != f.dir || info.Mounts[0].Destination != WorkflowDir {
		t.Errorf("working dir %q, mounts %+v", info.Config.WorkingDir, info.Mounts)
	}
	// As the job sees them.
	if got := strings.Fields(f.out.String()); len(got) < 2 || got[0] != strconv.Itoa(64<<20) || got[1] != strconv.Itoa(32<<10) {
		t.Errorf("inside, memory limit and shm size (KiB) %q, want %d and %d", got, 64<<20, 32<<10)
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	p.Wait()
}

func TestDockerContainerConfig(t *testing.T) {
	t.Parallel()
	gpus := func(n int) []container.DeviceRequest {
		return []container.DeviceRequest{{Driver: "nvidia", Count: n, Capabilities: [][]string{{"gpu"}}}}
	}
	tests := []struct {
		name        string
		res         Resources
		wantCPU     int64
		wantMem     int64
		wantSwap    int64
		wantDevices []container.DeviceRequest
	}{
		{"no limits", Resources{}, 0, 0, 0, nil},
		{"cpu and memory", Resources{CPUs: 1, MemoryMiB: 16 << 10}, 1e9, 16 << 30, 16 << 30, nil},
		{"more cpus than the machine has", Resources{CPUs: runtime.NumCPU() + 1}, int64(runtime.NumCPU()) * 1e9, 0, 0, nil},
		{"two gpus", Resources{GPUs: 2}, 0, 0, 0, gpus(2)},
		{"all gpus", Resources{GPUs: -1}, 0, 0, 0, gpus(-1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d := &Docker{user: "1000:1000", owner: "o"}
			cfg, hc := d.containerConfig(Spec{JobID: "j", Commands: []string{"true"}, Resources: tt.res}, "img", "/work/j")
			if hc.NanoCPUs != tt.wantCPU || hc.Memory != tt.wantMem || hc.MemorySwap != tt.wantSwap {
				t.Errorf("NanoCPUs %d, Memory %d, MemorySwap %d", hc.NanoCPUs, hc.Memory, hc.MemorySwap)
			}
			if !reflect.DeepEqual(hc.DeviceRequests, tt.wantDevices) {
				t.Errorf("device requests %+v, want %+v", hc.DeviceRequests, tt.wantDevices)
			}
			if cfg.User != "1000:1000" || cfg.Labels[LabelOwner] != "o" || cfg.Labels[LabelJobID] != "j" {
				t.Errorf("user %q, labels %v", cfg.User, cfg.Labels)
			}
			if !strings.Contains(strings.Join(cfg.Env, "\n"), "HOME=/tmp") {
				t.Errorf("a non-root container has no HOME: %v", cfg.Env)
			}
		})
	}
}

func TestDockerStop(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		commands   []string
		stop       func(Process) error
		wantCode   int
		wantSignal string
	}{
		{"terminate", []string{"sleep 1000 &", "echo ready", "wait"}, Process.Terminate, 128 + int(syscall.SIGTERM), "SIGTERM"},
		{"kill", []string{"sleep 1000 &", "echo ready", "wait"}, Process.Kill, 128 + int(syscall.SIGKILL), "SIGKILL"},
		{"terminate with a trap", []string{"trap 'echo cleaning up; exit 7' TERM", "sleep 1000 &", "echo ready", "wait"}, Process.Terminate, 7, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d, f := dockerSetup(t, Options{})
			p := startOn(t, d, f.dockerSpec(tt.commands...))
			testutil.Eventually(t, "the script to start", func() bool { return strings.Contains(f.out.String(), "ready") })
			if err := tt.stop(p); err != nil {
				t.Fatal(err)
			}
			res := p.Wait()
			if res.Err != nil || res.ExitCode != tt.wantCode || res.Signal != tt.wantSignal {
				t.Errorf("result %+v, want exit code %d, signal %q; output %q", res, tt.wantCode, tt.wantSignal, f.out.String())
			}
			if ids := ownedContainers(t, d); len(ids) > 0 {
				t.Errorf("containers left after Wait: %v", ids)
			}
			// Signalling an ended job is harmless.
			if err := p.Terminate(); err != nil {
				t.Errorf("Terminate after the end: %v", err)
			}
			if p.Wait() != res {
				t.Errorf("Wait is not stable")
			}
		})
	}
}

func TestDockerStopBeforeStart(t *testing.T) {
	t.Parallel()
	d, f := dockerSetup(t, Options{})
	p := startOn(t, d, f.dockerSpec("sleep 1000"))
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	if res := p.Wait(); res.Err != nil || res.ExitCode != 137 || res.Signal != "SIGKILL" {
		t.Errorf("result %+v; output %q", res, f.out.String())
	}
}

func TestDockerMissingImage(t *testing.T) {
	t.Parallel()
	d, _ := dockerSetup(t, Options{})
	for _, image := range []string{"127.0.0.1:1/dstack-test/missing:latest", "dstack-test/no-such-image:never"} {
		t.Run(image, func(t *testing.T) {
			t.Parallel()
			f := setup(t)
			spec := f.dockerSpec("true")
			spec.Image = image
			res := startOn(t, d, spec).Wait()
			want := `image "` + image + `" is not on this host and could not be pulled: `
			if res.Err == nil || !strings.Contains(res.Err.Error(), want) || res.ExitCode != -1 {
				t.Fatalf("result %+v, want an error with %q", res, want)
			}
			if out := f.out.String(); !strings.Contains(out, "pulling image "+image) || !strings.Contains(out, want) {
				t.Errorf("output %q does not tell the job's author", out)
			}
		})
	}
}

func TestDockerCleanup(t *testing.T) {
	t.Parallel()
	d, _ := dockerSetup(t, Options{})
	other, _ := dockerSetup(t, Options{})
	create := func(owner string, start bool) string {
		cfg, hc := (&Docker{user: "0:0", owner: owner}).containerConfig(Spec{JobID: "crashed", Commands: []string{"sleep 1000"}}, testImage, t.TempDir())
		c, err := d.cli.ContainerCreate(context.Background(), client.ContainerCreateOptions{Config: cfg, HostConfig: hc})
		if err != nil {
			t.Fatal(err)
		}
		if start {
			if _, err := d.cli.ContainerStart(context.Background(), c.ID, client.ContainerStartOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		return c.ID
	}
	create(d.owner, true)
	create(d.owner, false)
	create(other.owner, true)
	if err := d.Cleanup(context.Background()); err != nil {
		t.Fatal(err)
	}
	if ids := ownedContainers(t, d); len(ids) > 0 {
		t.Errorf("leftovers not removed: %v", ids)
	}
	if ids := ownedContainers(t, other); len(ids) != 1 {
		t.Errorf("another runner's containers: %v, want its one left alone", ids)
	}
	if err := other.Cleanup(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestDockerBash(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		bashImage string
		want      string
	}{
		// No image for bash jobs: they run on the host.
		{"on the host", "", "host"},
		// The test image has no bash: sh runs the script.
		{"in the bash image", testImage, "/workflow sh"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d, f := dockerSetup(t, Options{BashImage: tt.bashImage})
			spec := f.spec(`if [ "$(pwd -P)" = "$(cd "$DIR" 2>/dev/null && pwd -P)" ]; then echo host; else echo "$(pwd) ${BASH_VERSION:-sh}"; fi`)
			spec.Provider = "bash"
			spec.Env = map[string]string{"DIR": f.dir}
			if res := startOn(t, d, spec).Wait(); !res.Success() {
				t.Fatalf("result %+v, output %q", res, f.out.String())
			}
			if got := strings.TrimSpace(f.out.String()); got != tt.want {
				t.Errorf("output %q, want %q", got, tt.want)
			}
		})
	}
}

func TestDockerOutputStreams(t *testing.T) {
	t.Parallel()
	d, f := dockerSetup(t, Options{})
	p := startOn(t, d, f.dockerSpec("echo first", "while [ ! -e go ]; do sleep 0.05; done", "echo second"))
	testutil.Eventually(t, "the first line while the job runs", func() bool { return f.out.String() == "first\n" })
	if err := os.WriteFile(filepath.Join(f.dir, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if res := p.Wait(); !res.Success() || f.out.String() != "first\nsecond\n" {
		t.Errorf("result %+v, output %q", res, f.out.String())
	}
}

func TestDockerOutputError(t *testing.T) {
	t.Parallel()
	d, f := dockerSetup(t, Options{})
	spec := f.dockerSpec("head -c 1000000 /dev/zero", "exit 0")
	spec.Output = failingWriter{}
	res := startOn(t, d, spec).Wait()
	if !res.Success() || res.OutputErr == nil {
		t.Errorf("result %+v: want success with an output error", res)
	}
}

func TestCopyPullProgress(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		stream  string
		want    string
		wantErr string
	}{
		{"steps without progress bars", `{"status":"Pulling from library/python","id":"3.12"}
{"status":"Pulling fs layer","progressDetail":{},"id":"a1"}
{"status":"Downloading","progressDetail":{"current":10,"total":100},"progress":"[=>   ]","id":"a1"}
{"status":"Pull complete","progressDetail":{},"id":"a1"}
{"status":"Digest: sha256:00"}
{"status":"Status: Downloaded newer image for python:3.12"}
`, "3.12: Pulling from library/python\na1: Pulling fs layer\na1: Pull complete\nDigest: sha256:00\nStatus: Downloaded newer image for python:3.12\n", ""},
		{"error", `{"status":"Pulling from x","id":"latest"}
{"errorDetail":{"message":"manifest unknown"},"error":"manifest unknown"}
`, "latest: Pulling from x\n", "manifest unknown"},
		{"garbage", `{"status":`, "", "read the pull's progress"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var out strings.Builder
			err := copyPullProgress(strings.NewReader(tt.stream), &out)
			if (err == nil) != (tt.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("error %v, want %q", err, tt.wantErr)
			}
			if out.String() != tt.want {
				t.Errorf("output %q, want %q", out.String(), tt.want)
			}
		})
	}
}

func TestNew(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	noEngine := Options{DockerHost: "unix://" + filepath.Join(t.TempDir(), "no-docker.sock")}
	tests := []struct {
		name     string
		opts     Options
		wantName string // "" for an error
	}{
		{"shell", Options{}, "shell"},
		{"k8s", Options{}, ""},
		{"docker", noEngine, ""},
		{"auto", noEngine, "shell"},
		{"", noEngine, "shell"},
	}
	for _, tt := range tests {
		e, err := New(ctx, tt.name, tt.opts)
		switch {
		case tt.wantName == "" && err == nil:
			t.Errorf("New(%q) = %v, want an error", tt.name, e.Name())
		case tt.wantName != "" && (err != nil || e.Name() != tt.wantName):
			t.Errorf("New(%q) = %v, %v; want %s", tt.name, e, err, tt.wantName)
		}
	}
	if _, err := New(ctx, "docker", noEngine); err == nil || !strings.Contains(err.Error(), "--executor shell") {
		t.Errorf("docker without an engine: %v, want it to say what to do", err)
	}
	if err := CheckName("podman"); err == nil {
		t.Errorf("CheckName accepts podman")
	}
}

func TestNewAutoPicksDocker(t *testing.T) {
	t.Parallel()
	dockerSetup(t, Options{}) // skips without an engine
	e, err := New(context.Background(), "auto", Options{})
	if err != nil || e.Name() != "docker" {
		t.Fatalf("New(auto) = %v, %v; want docker", e, err)
	}
	_ = e.(*Docker).Close()
}

var _ Cleaner = (*Docker)(nil)
