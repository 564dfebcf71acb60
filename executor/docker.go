package executor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/client"
)

// WorkflowDir is where a job's working directory is mounted in its
// container, and the container's working directory.
const WorkflowDir = "/workflow"

// Labels of a job's container. LabelOwner is Options.Owner: it is how a
// runner finds the containers a crash left behind.
const (
	LabelOwner    = "ai.dstack.runner"
	LabelJobID    = "ai.dstack.job-id"
	LabelRunName  = "ai.dstack.run-name"
	LabelWorkflow = "ai.dstack.workflow"
)

// Docker runs each job in a container of its image, through the Docker
// Engine API (any engine that speaks API 1.41 or later).
//
// What runs, by the workflow's provider:
//
//   - docker: the job's image; the commands as one script ("set -e" first,
//     so the first failing command ends it) run by /bin/sh -c. The image's
//     entrypoint is replaced: the commands are the job.
//   - python: the same. The workflow's resolution has already made the
//     image python:VERSION and the commands `pip install -r REQUIREMENTS`
//     and `python3 FILE ARGS...`; they run as given.
//   - bash: in Options.BashImage, with bash when the image has it and sh
//     otherwise. With no BashImage, bash jobs run on the host with the shell
//     executor: a bash workflow names no image, and the host is the machine
//     its author had in mind; picking an image for them would change what
//     their commands find. Every other job without an image does the same.
//
// The container has the job's working directory bind-mounted at
// /workflow, its working directory; the job's Env and the DSTACK_*
// variables over the image's environment; the job's labels; its CPUs (at
// most the machine's), memory (swap off), shared memory and GPUs (the
// nvidia driver) as limits. It runs as Options.User, by default the
// runner's uid:gid, so that what the job writes in /workflow stays the
// runner's to upload and remove (the image's USER is overridden; a job
// that needs root for apt-get gets it only where the runner is root); when
// that user is not root, HOME is /tmp unless the job sets it, so that tools
// which write under HOME (pip falls back to a user install) work. The
// engine's init (docker-init) is PID 1: it hands the script the SIGTERM
// that a shell as PID 1 would ignore, and reaps orphans. The script's
// stderr is redirected into its stdout (`exec 2>&1`), one pipe, so the
// output keeps the order it was written in, as with the shell executor.
//
// A Process pulls a missing image (its progress lines go to the output),
// creates the container, attaches to its output, starts it, waits for it,
// and removes it. A pull that fails ends the job with an error that says
// so. Terminate sends SIGTERM to the container, Kill SIGKILL; the grace
// between them is the runner's.
type Docker struct {
	cli       *client.Client
	bashImage string
	owner     string
	user      string
	log       *slog.Logger
	shell     Shell
}

// NewDocker connects to the Docker Engine (DOCKER_HOST and the other
// DOCKER_* variables, else the local socket) and pings it.
func NewDocker(ctx context.Context, opts Options) (*Docker, error) {
	clientOpts := []client.Opt{client.FromEnv}
	if opts.DockerHost != "" {
		clientOpts = append(clientOpts, client.WithHost(opts.DockerHost))
	}
	cli, err := client.New(clientOpts...)
	if err != nil {
		return nil, fmt.Errorf("docker executor: %w", err)
	}
	timeout := opts.PingTimeout
	if timeout == 0 {
		timeout = 5 * time.Second
	}
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if _, err := cli.Ping(pctx, client.PingOptions{}); err != nil {
		_ = cli.Close()
		return nil, fmt.Errorf("docker executor: the Docker Engine at %s does not answer (start it, or use --executor shell): %w", cli.DaemonHost(), err)
	}
	user := opts.User
	if user == "" {
		user = fmt.Sprintf("%d:%d", os.Getuid(), os.Getgid())
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Docker{
		cli: cli, bashImage: opts.BashImage, owner: opts.Owner, user: user,
		log: log.With("subsystem", "executor"),
	}, nil
}

// Name implements Executor.
func (*Docker) Name() string { return "docker" }

// Close releases the connections to the engine. Processes still running
// fail to be waited for.
func (d *Docker) Close() error { return d.cli.Close() }

// Start implements Executor. It returns once the job is under way; the
// pull, the creation and the start of the container happen in the
// background, and their failures are Wait's result.
func (d *Docker) Start(ctx context.Context, spec Spec) (Process, error) {
	if err := spec.Validate(); err != nil {
		return nil, fmt.Errorf("docker executor: %w", err)
	}
	image := spec.Image
	if image == "" {
		image = d.bashImage
	}
	if image == "" {
		return d.shell.Start(ctx, spec)
	}
	dir, err := filepath.Abs(spec.WorkDir)
	if err != nil {
		return nil, fmt.Errorf("docker executor: %w", err)
	}
	cfg, hc := d.containerConfig(spec, image, dir)
	p := newDockerProcess(d, spec.Output, image, cfg, hc)
	go p.run()
	return p, nil
}

// bashOrSh runs its first argument with bash when the image has bash, with
// sh otherwise.
const bashOrSh = `if command -v bash >/dev/null 2>&1; then exec bash -c "$1"; fi; exec /bin/sh -c "$1"`

// containerConfig is the container that runs spec in image, with dir
// mounted at WorkflowDir.
func (d *Docker) containerConfig(spec Spec, image, dir string) (*container.Config, *container.HostConfig) {
	script := "exec 2>&1\nset -e\n" + strings.Join(spec.Commands, "\n") + "\n"
	entrypoint := []string{"/bin/sh", "-c", script}
	if spec.Provider == "bash" {
		entrypoint = []string{"/bin/sh", "-c", bashOrSh, "sh", script}
	}
	var base []string
	if !isRoot(d.user) {
		base = []string{"HOME=/tmp"}
	}
	cfg := &container.Config{
		Image:        image,
		Entrypoint:   entrypoint,
		Cmd:          nil,
		Env:          Environ(base, spec),
		WorkingDir:   WorkflowDir,
		User:         d.user,
		AttachStdout: true,
		AttachStderr: true,
		Labels: map[string]string{
			LabelOwner:    d.owner,
			LabelJobID:    spec.JobID,
			LabelRunName:  spec.RunName,
			LabelWorkflow: spec.Workflow,
		},
	}
	withInit := true
	res := spec.Resources
	// The engine refuses more CPUs than the machine has; a runner whose
	// reported resources were overridden may be given such a job.
	res.CPUs = min(res.CPUs, runtime.NumCPU())
	hc := &container.HostConfig{
		Mounts:  []mount.Mount{{Type: mount.TypeBind, Source: dir, Target: WorkflowDir}},
		Init:    &withInit,
		ShmSize: res.ShmSizeMiB << 20,
		Resources: container.Resources{
			NanoCPUs: int64(res.CPUs) * 1e9,
			Memory:   res.MemoryMiB << 20,
		},
	}
	if hc.Memory > 0 {
		hc.MemorySwap = hc.Memory // no swap beyond the limit
	}
	if res.GPUs != 0 {
		hc.DeviceRequests = []container.DeviceRequest{{
			Driver:       "nvidia",
			Count:        res.GPUs, // -1: all
			Capabilities: [][]string{{"gpu"}},
		}}
	}
	return cfg, hc
}

// isRoot reports whether a container user (name, uid or uid:gid) is root.
func isRoot(user string) bool {
	u, _, _ := strings.Cut(user, ":")
	return u == "0" || u == "root"
}

// Cleanup implements Cleaner: it removes every container labelled with
// this executor's Owner, running or not. A runner calls it before it takes
// a job, when every such container is a leftover. Without an Owner it does
// nothing.
func (d *Docker) Cleanup(ctx context.Context) error {
	if d.owner == "" {
		return nil
	}
	list, err := d.cli.ContainerList(ctx, containerListOwned(d.owner))
	if err != nil {
		return fmt.Errorf("list leftover containers: %w", err)
	}
	var errs []error
	for _, c := range list.Items {
		_, err := d.cli.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
		if err != nil {
			errs = append(errs, fmt.Errorf("remove leftover container %.12s: %w", c.ID, err))
			continue
		}
		d.log.Info("removed a container an earlier run of the runner left", "container", c.ID[:min(12, len(c.ID))], "job", c.Labels[LabelJobID], "run", c.Labels[LabelRunName])
	}
	return errors.Join(errs...)
}

// containerListOwned lists the containers of an owner, running or not.
func containerListOwned(owner string) client.ContainerListOptions {
	return client.ContainerListOptions{All: true, Filters: make(client.Filters).Add("label", LabelOwner+"="+owner)}
}
