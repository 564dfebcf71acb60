package e2e

import (
	"context"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/backend"
	"github.com/dstackai/dstack/executor/executortest"
	"github.com/dstackai/dstack/internal/ec2fake"
	"github.com/dstackai/dstack/internal/ec2fake/ec2docker"
	"github.com/dstackai/dstack/internal/testutil"
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
	t        *testing.T
	fake     *ec2fake.Server
	machines *ec2docker.Machines
	proj     string
}

func newAWSCluster(t *testing.T) *awsCluster {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test: skipped with -short")
	}
	docker := requireDocker(t)
	t.Parallel()
	c := &awsCluster{t: t, proj: project(t, awsProject)}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := executortest.Busybox(ctx); err != nil { // installs busybox-static when missing
		t.Fatal(err)
	}
	m, err := ec2docker.New(ctx, docker, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	c.machines = m
	gw, err := m.Gateway(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c.fake = ec2fake.New(ec2fake.Options{
		Credentials: map[string]string{awsKeyID: awsSecret},
		IMDSListen:  gw + ":0",
		Boot:        m.Boot,
		Terminated:  m.PowerOff,
		Logf:        t.Logf,
	})
	t.Cleanup(c.fake.Close)
	t.Cleanup(c.powerOffAll) // after the server stopped (cleanups run last first)
	port := freePort(t)
	c.cluster = newCluster(t, "", "--host", "0.0.0.0", "--port", strconv.Itoa(port),
		"--external-url", "http://"+net.JoinHostPort(gw, strconv.Itoa(port)),
		"--aws-endpoint-url", c.fake.URL(), "--idle-timeout", "3s", "--heartbeat-timeout", "10s")
	return c
}

// powerOffAll removes every instance's container and the image, showing
// their output when the test failed.
func (c *awsCluster) powerOffAll() {
	if c.t.Failed() || os.Getenv("DSTACK_TEST_VERBOSE") != "" {
		for _, id := range c.machines.Instances() {
			c.t.Logf("instance %s:\n%s", id, c.machines.Output(id))
		}
	}
	c.machines.Close()
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
	testutil.EventuallyWithin(t, odTimeout, "the idle instance to be terminated", func() bool { return len(c.live()) == 0 })

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
	if r := c.ok("runners"); !strings.Contains(r.stdout, "(interrupted)") {
		t.Errorf("dstack runners does not show the interrupted runner:\n%s", r.stdout)
	}
	c.ok("stop", "--abort", name)
	testutil.EventuallyWithin(t, odTimeout, "every instance to be terminated", func() bool { return len(c.live()) == 0 })

	// Clear works once the server knows nothing runs (the interrupted
	// instance EC2 terminated by itself is seen gone at the next
	// reconciliation); the secret was never printed.
	var clear result
	testutil.EventuallyWithin(t, odTimeout, "dstack aws clear to succeed", func() bool {
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
