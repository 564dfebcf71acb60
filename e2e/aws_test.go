package e2e

import (
	"bytes"
	"context"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	dockerbuild "github.com/docker/docker/api/types/build"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/backend"
	"github.com/dstackai/dstack/backend/aws/ec2fake"
	"github.com/dstackai/dstack/executor/executortest"
	"github.com/dstackai/dstack/internal/scratch"
)

// The AWS scenario runs the real `dstack server` with its EC2 calls sent
// (--aws-endpoint-url) to an EC2-compatible server in this test process,
// through the real AWS SDK. An instance that server launches boots as a
// container on the Docker bridge: a bare busybox root file system that runs
// the instance's user data as EC2 would, reading its launch index from an
// IMDSv2 endpoint the fake serves for it on the bridge, downloading
// dstack-runner from the server's /runner, and starting it with its join
// token. Nothing else is in the image: what the runner has, the user data
// installed.

const (
	awsKeyID  = "AKIAE2ETESTKEY000001"
	awsSecret = "e2eSecretKeyThatMustNeverBePrinted0000001"
	awsRegion = "eu-west-1"
)

// awsProject's workflows fit an m5.large (2 vCPUs, 8 GiB).
var awsProject = map[string]string{".dstack/workflows.yaml": `workflows:
  - name: hello
    provider: bash
    commands:
      - echo "hello from $(hostname)"
    resources:
      cpu: 2
  - name: spotty
    provider: bash
    commands:
      - echo "attempt starts"
      - sleep 600
    resources:
      cpu: 2
      interruptible: true
`}

// awsCluster is a server whose AWS account is an ec2fake.Server whose
// instances are containers.
type awsCluster struct {
	*cluster
	t      *testing.T
	docker *client.Client
	fake   *ec2fake.Server
	image  string
	proj   string

	mu         sync.Mutex
	containers map[string]string // instance ID → container ID
}

func newAWSCluster(t *testing.T) *awsCluster {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test: skipped with -short")
	}
	docker := requireDocker(t)
	t.Parallel()
	gw := bridgeGateway(t, docker)
	c := &awsCluster{t: t, docker: docker, containers: map[string]string{}, proj: project(t, awsProject)}
	c.image = buildInstanceImage(t, docker)
	c.fake = ec2fake.New(ec2fake.Options{
		Credentials: map[string]string{awsKeyID: awsSecret},
		IMDSListen:  gw + ":0",
		Boot:        c.boot,
		Terminated:  c.powerOff,
		Logf:        t.Logf,
	})
	t.Cleanup(c.fake.Close)
	t.Cleanup(c.removeContainers) // after the server stopped (cleanups run last first)
	port := freePort(t)
	c.cluster = newCluster(t, "", "--host", "0.0.0.0", "--port", strconv.Itoa(port),
		"--external-url", "http://"+net.JoinHostPort(gw, strconv.Itoa(port)),
		"--aws-endpoint-url", c.fake.URL(), "--idle-timeout", "3s", "--heartbeat-timeout", "10s")
	return c
}

// boot starts the container of a launched instance: sh runs its user data.
func (c *awsCluster) boot(in ec2fake.Instance, imdsURL string) {
	ctx, cancel := context.WithTimeout(context.Background(), dockerTimeout)
	defer cancel()
	created, err := c.docker.ContainerCreate(ctx, &container.Config{
		Image:    c.image,
		Cmd:      []string{"sh", "-c", in.UserData},
		Env:      []string{"DSTACK_IMDS_ENDPOINT=" + imdsURL, "PATH=/usr/local/bin:/bin", "HOME=/root"},
		Hostname: in.ID,
		Labels:   map[string]string{hostLabel: "aws", "instance": in.ID},
	}, &container.HostConfig{}, nil, nil, "")
	if err != nil {
		c.t.Errorf("boot %s: %v", in.ID, err)
		return
	}
	c.mu.Lock()
	c.containers[in.ID] = created.ID
	c.mu.Unlock()
	if err := c.docker.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		c.t.Errorf("boot %s: %v", in.ID, err)
	}
}

// powerOff removes the container of an instance the fake terminated, as
// EC2 powers the machine off.
func (c *awsCluster) powerOff(in ec2fake.Instance) {
	c.mu.Lock()
	id := c.containers[in.ID]
	delete(c.containers, in.ID)
	c.mu.Unlock()
	if id != "" {
		c.removeContainer(id)
	}
}

func (c *awsCluster) removeContainer(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), dockerTimeout)
	defer cancel()
	if err := c.docker.ContainerRemove(ctx, id, container.RemoveOptions{Force: true}); err != nil && !client.IsErrNotFound(err) {
		c.t.Errorf("remove container %s: %v", id, err)
	}
}

func (c *awsCluster) removeContainers() {
	c.mu.Lock()
	ids := c.containers
	c.containers = map[string]string{}
	c.mu.Unlock()
	for iid, id := range ids {
		if c.t.Failed() || os.Getenv("DSTACK_TEST_VERBOSE") != "" {
			c.t.Logf("instance %s:\n%s", iid, c.logs(id))
		}
		c.removeContainer(id)
	}
}

// logs is a container's output, for failure messages.
func (c *awsCluster) logs(id string) string {
	ctx, cancel := context.WithTimeout(context.Background(), dockerTimeout)
	defer cancel()
	rc, err := c.docker.ContainerLogs(ctx, id, container.LogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		return err.Error()
	}
	defer rc.Close()
	var out bytes.Buffer
	_, _ = stdcopy.StdCopy(&out, &out, rc)
	return out.String()
}

// live are the fake's instances not terminated.
func (c *awsCluster) live() []ec2fake.Instance {
	var out []ec2fake.Instance
	for _, in := range c.fake.Instances() {
		if in.State == "pending" || in.State == "running" {
			out = append(out, in)
		}
	}
	return out
}

func (c *awsCluster) ok(args ...string) result {
	c.t.Helper()
	r := c.dstack(c.proj, args...)
	if r.code != 0 {
		c.t.Fatalf("%s", r)
	}
	return r
}

func TestAWSOnDemand(t *testing.T) {
	c := newAWSCluster(t)

	// Wrong credentials are refused with AWS's reason; nothing is saved.
	bad := c.dstack(c.proj, "aws", "config", "--access-key-id", awsKeyID, "--secret-access-key", "wrong-secret", "--region", awsRegion)
	if bad.code == 0 || !strings.Contains(bad.stderr, "nothing was saved") ||
		!(strings.Contains(bad.stderr, "SignatureDoesNotMatch") || strings.Contains(bad.stderr, "AuthFailure")) {
		t.Fatalf("wrong secret accepted or unexplained: %s", bad)
	}
	if r := c.dstack(c.proj, "aws", "info"); !strings.Contains(r.stdout+r.stderr, "not configured") {
		t.Fatalf("after a refused config: %s", r)
	}
	if r := c.ok("aws", "config", "--access-key-id", awsKeyID, "--secret-access-key", awsSecret, "--region", awsRegion); strings.Contains(r.stdout+r.stderr, awsSecret) {
		t.Fatalf("aws config printed the secret: %s", r)
	}
	info := c.ok("aws", "info")
	if !strings.Contains(info.stdout, awsKeyID) || !strings.Contains(info.stdout, awsSecret[len(awsSecret)-4:]) {
		t.Fatalf("aws info: %s", info)
	}

	// An instance type the region does not sell is refused.
	if r := c.dstack(c.proj, "on-demand", "limit", "-i", "m5.largee", "--max", "1"); r.code == 0 || !strings.Contains(r.stderr, "m5.largee") {
		t.Fatalf("unsupported type: %s", r)
	}
	c.ok("on-demand", "limit", "-i", "m5.large", "--max", "1")
	limits := c.ok("on-demand", "limits")
	if !strings.Contains(limits.stdout, awsRegion) || !strings.Contains(limits.stdout, "m5.large") {
		t.Fatalf("limits: %s", limits)
	}

	// A run: an instance is launched, boots, its runner joins and runs it.
	r := c.ok("run", "hello")
	if !strings.Contains(r.stdout, "hello from i-") {
		t.Fatalf("run hello: %s", r)
	}
	var inst ec2fake.Instance
	for _, in := range c.fake.Instances() {
		inst = in
	}
	if inst.ID == "" || inst.InstanceType != "m5.large" || inst.Spot || !inst.HTTPTokensRequired ||
		inst.Tags[backend.TagServerID] == "" || inst.VolumeTags[backend.TagServerID] == "" {
		t.Fatalf("instance as launched: %+v", inst)
	}
	var seen bool
	for _, rn := range c.runners() {
		if rn.Backend == "aws" && rn.Region == awsRegion && rn.InstanceType == "m5.large" {
			seen = true
		}
	}
	if !seen {
		t.Fatalf("no aws runner in %+v", c.runners())
	}

	// Idle: terminated after the idle timeout.
	waitFor(t, odTimeout, "the idle instance to be terminated", func() bool { return len(c.live()) == 0 })

	// A spot instance interrupted mid-job: the job is requeued at once and
	// runs again on a new instance.
	c.ok("on-demand", "limit", "-i", "m5.large", "--spot", "--max", "2")
	name := runName(t, c.ok("run", "-d", "spotty").stdout)
	first := c.waitRun(name, "running on a spot instance", func(r api.Run) bool { return r.Status == api.StatusRunning })
	var spot ec2fake.Instance
	for _, in := range c.live() {
		if in.Spot {
			spot = in
		}
	}
	if spot.ID == "" {
		t.Fatalf("no live spot instance: %+v", c.fake.Instances())
	}
	c.fake.Interrupt(spot.ID, 30*time.Second)
	c.waitRun(name, "the job to run again after the interruption", func(r api.Run) bool {
		return r.Status == api.StatusRunning && r.Jobs[0].RunnerName != first.Jobs[0].RunnerName
	})
	c.ok("stop", "--abort", name)
	waitFor(t, odTimeout, "every instance to be terminated", func() bool { return len(c.live()) == 0 })

	// Clear works once the server knows nothing runs (the interrupted
	// instance EC2 terminated by itself is seen gone at the next
	// reconciliation); the secret was never printed.
	var clear result
	waitFor(t, odTimeout, "dstack aws clear to succeed", func() bool {
		clear = c.dstack(c.proj, "aws", "clear", "-f")
		return clear.code == 0
	})
	if r := c.dstack(c.proj, "aws", "info"); !strings.Contains(r.stdout+r.stderr, "not configured") {
		t.Fatalf("after clear: %s", r)
	}
	if out := c.server.output(); strings.Contains(out, awsSecret) {
		t.Fatal("the server printed the AWS secret")
	}
	for _, in := range c.fake.Instances() {
		if strings.Contains(in.UserData, awsSecret) {
			t.Fatal("an instance's user data holds the AWS secret")
		}
	}
}

// bridgeGateway is the address of the host on Docker's default bridge.
func bridgeGateway(t *testing.T, docker *client.Client) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), dockerTimeout)
	defer cancel()
	nw, err := docker.NetworkInspect(ctx, "bridge", network.InspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, cfg := range nw.IPAM.Config {
		if ip := net.ParseIP(cfg.Gateway); ip.To4() != nil {
			return ip.String()
		}
		// The default bridge's IPAM names only the subnet; its gateway
		// is the subnet's first host address.
		if _, n, err := net.ParseCIDR(cfg.Subnet); err == nil && n.IP.To4() != nil {
			ip := n.IP.To4()
			return net.IPv4(ip[0], ip[1], ip[2], ip[3]+1).String()
		}
	}
	t.Fatalf("the bridge network has no IPv4 gateway: %+v", nw.IPAM)
	return ""
}

// freePort is a TCP port free on every address now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// buildInstanceImage is a bare machine: busybox and an empty /usr/local/bin.
func buildInstanceImage(t *testing.T, docker *client.Client) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	busybox, err := executortest.Busybox(ctx)
	if err != nil {
		t.Fatal(err)
	}
	bb, err := scratch.BusyboxEntries(busybox, "rootfs/bin")
	if err != nil {
		t.Fatal(err)
	}
	files := append([]scratch.Entry{
		{Name: "Dockerfile", Mode: 0o644, Data: []byte("FROM scratch\nCOPY rootfs /\n")},
		{Name: "rootfs/tmp/", Mode: 0o1777, Dir: true},
		{Name: "rootfs/root/", Mode: 0o700, Dir: true},
		{Name: "rootfs/usr/local/bin/", Mode: 0o755, Dir: true},
	}, bb...)
	ref := uniqueName("dstack-e2e-ec2") + ":latest"
	if err := scratch.Build(ctx, docker, files, dockerbuild.ImageBuildOptions{Tags: []string{ref}, Labels: map[string]string{hostLabel: "aws"}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), dockerTimeout)
		defer cancel()
		_, _ = docker.ImageRemove(ctx, ref, image.RemoveOptions{Force: true, PruneChildren: true})
	})
	return ref
}
