package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"

	"github.com/dstackai/dstack/executor/executortest"
	"github.com/dstackai/dstack/internal/scratch"
	"github.com/dstackai/dstack/internal/testutil"
)

// The multi-host scenarios run the server and each runner in a container
// of their own on a user-defined Docker bridge network, so that a runner
// can be cut off the network (docker network disconnect) or killed
// (docker kill) while the others go on. Nothing is pulled: hostImage is
// built FROM scratch through the engine's build API, from a context made in
// memory (as backend/local builds its runner image), with the static
// binaries TestMain built and a static busybox for a shell.

// dockerTimeout bounds one call to the engine.
const dockerTimeout = 60 * time.Second

// hostLabel marks every container and network the scenarios create, to
// find leftovers by hand: docker ps -a --filter label=dstack.e2e=multihost.
const hostLabel = "dstack.e2e"

// hostWorkflows is the project baked into the image at /project.
const hostWorkflows = `workflows:
  - name: count
    provider: bash
    commands:
      - for i in $(seq 1 150); do echo "line $i"; sleep 0.1; done
`

// countLines is how many lines the count workflow prints.
const countLines = 150

// requireDocker returns a client of the Docker engine, closed when the
// test ends. It skips the test when no engine answers, and fails it then
// under CI.
func requireDocker(t *testing.T) *client.Client {
	t.Helper()
	docker, err := client.New(client.FromEnv)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err = docker.Ping(ctx, client.PingOptions{})
		cancel()
		if err != nil {
			_ = docker.Close()
		}
	}
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI is set and no Docker engine answers: %v", err)
		}
		t.Skipf("no Docker engine: %v", err)
	}
	t.Cleanup(func() { _ = docker.Close() })
	return docker
}

// uniqueName is prefix and random hex: names of containers and networks
// that no other test, or test binary, uses.
func uniqueName(prefix string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}

// buildHostImage builds the image every container of the scenarios runs,
// tagged uniquely, and removes it when the test ends. It holds dstack and
// dstack-runner in /usr/local/bin, busybox in /bin with its applets
// (/bin/sh among them) linked to it, and the count workflow in /project.
func buildHostImage(t *testing.T, docker *client.Client) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	busybox, err := executortest.Busybox(ctx)
	if err != nil {
		t.Fatal(err)
	}
	bbEntries, err := scratch.BusyboxEntries(busybox, "rootfs/bin")
	if err != nil {
		t.Fatal(err)
	}
	files := append([]scratch.Entry{
		{Name: "Dockerfile", Mode: 0o644, Data: []byte("FROM scratch\nCOPY rootfs /\nENV PATH=/usr/local/bin:/bin HOME=/root\nWORKDIR /project\n")},
		{Name: "rootfs/tmp/", Mode: 0o1777, Dir: true},
		{Name: "rootfs/root/", Mode: 0o700, Dir: true},
		{Name: "rootfs/data/", Mode: 0o755, Dir: true},
		{Name: "rootfs/project/.dstack/", Mode: 0o755, Dir: true},
		{Name: "rootfs/project/.dstack/workflows.yaml", Mode: 0o644, Data: []byte(hostWorkflows)},
		{Name: "rootfs/usr/local/bin/", Mode: 0o755, Dir: true},
	}, bbEntries...)
	for _, bin := range []string{bins.dstack, bins.runner} {
		b, err := os.ReadFile(bin)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, scratch.Entry{Name: "rootfs/usr/local/bin/" + filepath.Base(bin), Mode: 0o755, Data: b})
	}

	ref := uniqueName("dstack-e2e-multihost") + ":latest"
	err = scratch.Build(ctx, docker, files, client.ImageBuildOptions{
		Tags: []string{ref}, Labels: map[string]string{hostLabel: "multihost"},
	})
	if err != nil {
		t.Fatalf("build %s: %v", ref, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), dockerTimeout)
		defer cancel()
		if _, err := docker.ImageRemove(ctx, ref, client.ImageRemoveOptions{Force: true, PruneChildren: true}); err != nil {
			t.Errorf("remove image %s: %v", ref, err)
		}
	})
	return ref
}

// dockerNet is a user-defined bridge network and the containers the test
// started on it. Everything is removed when the test ends, pass or fail;
// a failed test (or DSTACK_TEST_VERBOSE) shows every container's output.
type dockerNet struct {
	t      *testing.T
	docker *client.Client
	image  string
	name   string // of the network; the prefix of its containers' names

	mu         sync.Mutex
	containers []string // names, in start order
}

// newDockerNet creates a network with a unique name.
func newDockerNet(t *testing.T, docker *client.Client, image string) *dockerNet {
	t.Helper()
	n := &dockerNet{t: t, docker: docker, image: image, name: uniqueName("dstack-e2e")}
	ctx, cancel := context.WithTimeout(context.Background(), dockerTimeout)
	defer cancel()
	if _, err := docker.NetworkCreate(ctx, n.name, client.NetworkCreateOptions{Driver: "bridge", Labels: map[string]string{hostLabel: "multihost"}}); err != nil {
		t.Fatalf("create network %s: %v", n.name, err)
	}
	t.Cleanup(n.remove)
	return n
}

// remove removes the containers, then the network.
func (n *dockerNet) remove() {
	ctx, cancel := context.WithTimeout(context.Background(), dockerTimeout)
	defer cancel()
	n.mu.Lock()
	names := n.containers
	n.mu.Unlock()
	for _, c := range names {
		if n.t.Failed() || os.Getenv("DSTACK_TEST_VERBOSE") != "" {
			stdout, stderr, _ := n.logs(c)
			n.t.Logf("---- container %s\nstdout:\n%s\nstderr:\n%s", c, stdout, stderr)
		}
		if _, err := n.docker.ContainerRemove(ctx, c, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true}); err != nil {
			n.t.Errorf("remove container %s: %v", c, err)
		}
	}
	if _, err := n.docker.NetworkRemove(ctx, n.name, client.NetworkRemoveOptions{}); err != nil {
		n.t.Errorf("remove network %s: %v", n.name, err)
	}
}

// start starts a container of the image on the network, called
// <network>-<role> (also its host name, which the others resolve), with
// cmd, and returns its name.
func (n *dockerNet) start(role string, cmd ...string) string {
	n.t.Helper()
	name := n.name + "-" + role
	ctx, cancel := context.WithTimeout(context.Background(), dockerTimeout)
	defer cancel()
	// Noted before it exists, so that a failed start still removes it.
	n.mu.Lock()
	n.containers = append(n.containers, name)
	n.mu.Unlock()
	_, err := n.docker.ContainerCreate(ctx, client.ContainerCreateOptions{
		Config:           &container.Config{Image: n.image, Cmd: cmd, Hostname: role, Labels: map[string]string{hostLabel: "multihost"}},
		HostConfig:       &container.HostConfig{NetworkMode: container.NetworkMode(n.name)},
		NetworkingConfig: &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{n.name: {}}},
		Name:             name,
	})
	if err != nil {
		n.t.Fatalf("create container %s: %v", name, err)
	}
	if _, err := n.docker.ContainerStart(ctx, name, client.ContainerStartOptions{}); err != nil {
		n.t.Fatalf("start container %s: %v", name, err)
	}
	return name
}

// logs is a container's output so far.
func (n *dockerNet) logs(name string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), dockerTimeout)
	defer cancel()
	rc, err := n.docker.ContainerLogs(ctx, name, client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		return "", "", err
	}
	defer rc.Close()
	var o, e bytes.Buffer
	_, err = stdcopy.StdCopy(&o, &e, rc)
	return o.String(), e.String(), err
}

// waitLog waits until the container's output (both streams) matches ok,
// and returns it. It fails the test when the container exits first.
func (n *dockerNet) waitLog(name, what string, timeout time.Duration, ok func(out string) bool) string {
	n.t.Helper()
	var out string
	testutil.EventuallyWithin(n.t, timeout, what, func() bool {
		stdout, stderr, err := n.logs(name)
		if err != nil {
			n.t.Fatalf("logs of %s: %v", name, err)
		}
		out = stdout + stderr
		if ok(out) {
			return true
		}
		ctx, cancel := context.WithTimeout(context.Background(), dockerTimeout)
		defer cancel()
		if st, err := n.docker.ContainerInspect(ctx, name, client.ContainerInspectOptions{}); err == nil && !st.Container.State.Running {
			n.t.Fatalf("container %s exited with code %d before %s:\n%s", name, st.Container.State.ExitCode, what, out)
		}
		return false
	})
	return out
}

// exec runs cmd in the container to its end, with env added.
func (n *dockerNet) exec(name string, env []string, cmd ...string) (result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	r := result{args: cmd}
	ex, err := n.docker.ExecCreate(ctx, name, client.ExecCreateOptions{Cmd: cmd, Env: env, AttachStdout: true, AttachStderr: true})
	if err != nil {
		return r, fmt.Errorf("exec %s in %s: %w", strings.Join(cmd, " "), name, err)
	}
	att, err := n.docker.ExecAttach(ctx, ex.ID, client.ExecAttachOptions{})
	if err != nil {
		return r, fmt.Errorf("exec %s in %s: %w", strings.Join(cmd, " "), name, err)
	}
	defer att.Close()
	var o, e bytes.Buffer
	if _, err := stdcopy.StdCopy(&o, &e, att.Reader); err != nil {
		return r, fmt.Errorf("exec %s in %s: read output: %w", strings.Join(cmd, " "), name, err)
	}
	r.stdout, r.stderr = o.String(), e.String()
	// The output ends with the process; its exit code may lag a moment.
	for {
		ins, err := n.docker.ExecInspect(ctx, ex.ID, client.ExecInspectOptions{})
		if err != nil {
			return r, fmt.Errorf("exec %s in %s: %w", strings.Join(cmd, " "), name, err)
		}
		if !ins.Running {
			r.code = ins.ExitCode
			return r, nil
		}
		select {
		case <-ctx.Done():
			return r, fmt.Errorf("exec %s in %s: %w", strings.Join(cmd, " "), name, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// disconnect cuts the container off the network.
func (n *dockerNet) disconnect(name string) {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), dockerTimeout)
	defer cancel()
	if _, err := n.docker.NetworkDisconnect(ctx, n.name, client.NetworkDisconnectOptions{Container: name, Force: true}); err != nil {
		n.t.Fatalf("disconnect %s from %s: %v", name, n.name, err)
	}
}

// connect puts the container back on the network.
func (n *dockerNet) connect(name string) {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), dockerTimeout)
	defer cancel()
	if _, err := n.docker.NetworkConnect(ctx, n.name, client.NetworkConnectOptions{Container: name, EndpointConfig: &network.EndpointSettings{}}); err != nil {
		n.t.Fatalf("connect %s to %s: %v", name, n.name, err)
	}
}

// kill kills the container with SIGKILL.
func (n *dockerNet) kill(name string) {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), dockerTimeout)
	defer cancel()
	if _, err := n.docker.ContainerKill(ctx, name, client.ContainerKillOptions{Signal: "KILL"}); err != nil {
		n.t.Fatalf("kill %s: %v", name, err)
	}
}
