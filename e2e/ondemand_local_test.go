package e2e

import (
	"context"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/backend"
	"github.com/dstackai/dstack/internal/testutil"
)

// The on-demand scenarios run the real `dstack server` with the local
// backend on the real Docker engine: its containers run the dstack-runner
// TestMain built next to dstack (the server builds their image from it),
// and reach the server, which listens on 0.0.0.0, through the Docker
// bridge's gateway. They run on SQLite only: what they exercise is the
// autoscaler and Docker, which the store's conformance suite and the
// autoscaler's tests already cover on both databases. They skip without a
// Docker engine, and fail then under CI.
//
// Every container the server launches carries its identity as a label;
// a watcher polls them all along (how many live at once, which ever
// existed), and every one left is removed when the test ends, pass or fail.

// odTimeout bounds an on-demand step: a container to start and its runner
// to join, or a teardown.
const odTimeout = 60 * time.Second

// odProject has the workflows of the scenarios, each fitting local.small
// (1 CPU, 1 GiB) but big, which no local instance type fits.
var odProject = map[string]string{".dstack/workflows.yaml": `workflows:
  - name: hello
    provider: bash
    commands:
      - echo "hello from an on-demand runner"
    resources:
      cpu: 1
      memory: 256MB
  - name: long
    provider: bash
    commands:
      - sleep 600
    resources:
      cpu: 1
      memory: 256MB
  - name: big
    provider: bash
    commands:
      - echo never
    resources:
      cpu: 64
`}

var serverIDRe = regexp.MustCompile(`server_id=(\S+)`)

// odCluster is a cluster whose server has the local backend on.
type odCluster struct {
	*cluster
	docker   *client.Client
	serverID string
	proj     string // the project with odProject

	mu   sync.Mutex
	peak int // the most live containers seen at once
	// resets counts resetPeak's calls: a sample listed before the last
	// reset does not count towards the peak after it.
	resets int
	ever   map[string]bool // every container ID seen
}

// newODCluster starts `dstack server --local-backend on` with the flags
// given (on --host 0.0.0.0 unless they name a host) and a watcher of its
// containers.
func newODCluster(t *testing.T, flags ...string) *odCluster {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test: skipped with -short")
	}
	t.Parallel()
	docker, err := client.New(client.FromEnv)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		_, err = docker.Ping(ctx, client.PingOptions{})
		cancel()
	}
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("no Docker engine under CI: %v", err)
		}
		t.Skipf("no Docker engine: %v", err)
	}
	t.Cleanup(func() { docker.Close() })
	c := &odCluster{docker: docker, ever: map[string]bool{}, proj: project(t, odProject)}
	// Cleanups run last first: the containers go after the server has
	// stopped (newCluster's cleanup), so it launches none meanwhile.
	t.Cleanup(c.removeContainers)
	own := []string{"--local-backend", "on", "--heartbeat-timeout", "10s"}
	if !slices.Contains(flags, "--host") {
		own = append(own, "--host", "0.0.0.0")
	}
	c.cluster = newCluster(t, "", append(own, flags...)...)
	testutil.EventuallyWithin(t, startTimeout, "the autoscaler to start", func() bool {
		if m := serverIDRe.FindStringSubmatch(c.server.stderr()); m != nil {
			c.serverID = m[1]
			return true
		}
		return c.server.exited()
	})
	if c.serverID == "" {
		t.Fatalf("the server did not start its autoscaler:\n%s", c.server.output())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go c.watch(ctx, done)
	t.Cleanup(func() { cancel(); <-done })
	return c
}

// containers lists the server's containers, live (created, running) or
// not, by label.
func (c *odCluster) containers() ([]container.Summary, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := c.docker.ContainerList(ctx, client.ContainerListOptions{All: true,
		Filters: make(client.Filters).Add("label", backend.TagServerID+"="+c.serverID)})
	return res.Items, err
}

// live counts the server's containers that are not exited or dead.
func (c *odCluster) live() (int, error) {
	c.mu.Lock()
	resets := c.resets
	c.mu.Unlock()
	cs, err := c.containers()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, ct := range cs {
		// A container stopped and being removed holds no slot any more.
		if ct.State != container.StateExited && ct.State != container.StateDead && ct.State != container.StateRemoving {
			n++
		}
	}
	c.record(cs, n, resets)
	return n, nil
}

func (c *odCluster) record(cs []container.Summary, live, resets int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if resets == c.resets {
		c.peak = max(c.peak, live)
	}
	for _, ct := range cs {
		c.ever[ct.ID] = true
	}
}

// watch polls the containers until ctx ends.
func (c *odCluster) watch(ctx context.Context, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		_, _ = c.live()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// stats is the most containers seen live at once, and how many existed.
func (c *odCluster) stats() (peak, ever int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.peak, len(c.ever)
}

// resetPeak starts counting the most containers live at once anew, from
// what is live now.
func (c *odCluster) resetPeak() {
	c.mu.Lock()
	c.peak = 0
	c.resets++
	c.mu.Unlock()
	_, _ = c.live()
}

// checkPeak fails the test when more than max containers were ever live at
// once.
func (c *odCluster) checkPeak(max int) {
	c.t.Helper()
	if peak, ever := c.stats(); peak > max {
		c.t.Errorf("%d containers were live at once (%d in all), over the limit's maximum of %d", peak, ever, max)
	}
}

// waitLive waits until n of the server's containers are live.
func (c *odCluster) waitLive(n int) {
	c.t.Helper()
	testutil.EventuallyWithin(c.t, odTimeout, "containers of the server to be "+strconv.Itoa(n), func() bool {
		got, err := c.live()
		return err == nil && got == n
	})
}

// waitNone waits until the server has no container at all, live or not.
func (c *odCluster) waitNone() {
	c.t.Helper()
	testutil.EventuallyWithin(c.t, odTimeout, "every container of the server to be removed", func() bool {
		cs, err := c.containers()
		return err == nil && len(cs) == 0
	})
}

// removeContainers removes every container labelled with the server's
// identity, whatever the test's outcome.
func (c *odCluster) removeContainers() {
	if c.serverID == "" {
		return
	}
	cs, err := c.containers()
	if err != nil {
		c.t.Errorf("list the server's containers: %v", err)
		return
	}
	for _, ct := range cs {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if _, err := c.docker.ContainerRemove(ctx, ct.ID, client.ContainerRemoveOptions{Force: true}); err != nil && !cerrdefs.IsNotFound(err) {
			c.t.Errorf("remove container %s: %v", ct.ID, err)
		}
		cancel()
	}
}

// ok runs a CLI command in the project and fails the test unless it exits 0.
func (c *odCluster) ok(args ...string) result {
	c.t.Helper()
	r := c.dstack(c.proj, args...)
	if r.code != 0 {
		c.t.Fatalf("%s", r)
	}
	return r
}

// submit starts a run of workflow detached and returns its name.
func (c *odCluster) submit(workflow string) string {
	c.t.Helper()
	return runName(c.t, c.ok("run", "-d", workflow).stdout)
}

// instanceRunners are the runners of on-demand instances.
func (c *odCluster) instanceRunners() []api.Runner {
	c.t.Helper()
	var out []api.Runner
	for _, r := range c.runners() {
		if r.Backend != "" {
			out = append(out, r)
		}
	}
	return out
}

// killServer kills the server with SIGKILL and starts it again on the same
// port and data directory.
func (c *odCluster) killServer() {
	c.t.Helper()
	c.server.stop(c.t, syscall.SIGKILL)
	port, err := strconv.Atoi(c.URL[strings.LastIndex(c.URL, ":")+1:])
	if err != nil {
		c.t.Fatalf("server URL %s: %v", c.URL, err)
	}
	c.startServer(port)
}

// TestOnDemandScaleUpAndIdle: a job no runner can take launches a
// local.small container whose runner runs it to done; `dstack runners`
// lists the instance meanwhile, and once it has been idle for the idle
// timeout the container is removed and its runner is offline.
func TestOnDemandScaleUpAndIdle(t *testing.T) {
	c := newODCluster(t, "--idle-timeout", "3s")
	if r := c.ok("on-demand", "limit", "-i", "local.small", "-m", "1"); !strings.Contains(r.stdout, "Limit added") {
		t.Fatalf("%s", r)
	}
	run := c.startDstack(c.proj, "run", "hello")
	var inst api.Runner
	testutil.EventuallyWithin(t, odTimeout, "dstack runners to list an on-demand instance", func() bool {
		if rs := c.instanceRunners(); len(rs) > 0 {
			inst = rs[0]
			return true
		}
		return run.exited()
	})
	if inst.Backend != "local" || inst.InstanceType != "local.small" || inst.PurchaseType != api.PurchaseOnDemand {
		t.Errorf("the instance's runner = %+v; want backend local, local.small, on-demand", inst)
	}
	if code := run.wait(t, odTimeout); code != 0 || run.stdout() != "hello from an on-demand runner\n" {
		t.Fatalf("dstack run hello: exit code %d\n%s", code, run.output())
	}
	c.waitNone()
	testutil.EventuallyWithin(t, waitTimeout, "the instance's runner to be offline", func() bool {
		for _, r := range c.runners() {
			if r.ID == inst.ID {
				return r.Status == api.RunnerOffline && (r.InstanceState == "terminated" || r.InstanceState == "gone")
			}
		}
		return false
	})
	c.checkPeak(1)
}

// TestOnDemandOnTheDefaultHost: `dstack server` on its default --host
// 127.0.0.1 also listens on the Docker gateway, so the containers of the
// local backend reach it and run the job.
func TestOnDemandOnTheDefaultHost(t *testing.T) {
	c := newODCluster(t, "--host", "127.0.0.1")
	if !strings.Contains(c.server.stderr(), "also listening, for the local backend's containers") {
		t.Errorf("the server does not say it listens on the gateway:\n%s", c.server.stderr())
	}
	if r := c.ok("on-demand", "limit", "-i", "local.small", "-m", "1"); !strings.Contains(r.stdout, "Limit added") {
		t.Fatalf("%s", r)
	}
	run := c.startDstack(c.proj, "run", "hello")
	if code := run.wait(t, odTimeout); code != 0 || run.stdout() != "hello from an on-demand runner\n" {
		t.Fatalf("dstack run hello on the default host: exit code %d\n%s", code, run.output())
	}
}

// TestOnDemandLimitDecrease: lowering a limit from 2 to 1 while both its
// instances run a job terminates one at once; its job is requeued and
// waits, saying why, while the other keeps running.
func TestOnDemandLimitDecrease(t *testing.T) {
	c := newODCluster(t)
	c.ok("on-demand", "limit", "-i", "local.small", "-m", "2")
	runs := []string{c.submit("long"), c.submit("long")}
	for _, name := range runs {
		c.waitRunLong(name, "to be running", func(r api.Run) bool { return r.Status == api.StatusRunning })
	}
	c.waitLive(2)

	if r := c.ok("on-demand", "limit", "-i", "local.small", "-m", "1", "-f"); !strings.Contains(r.stdout, "Limit changed") {
		t.Fatalf("%s", r)
	}
	c.waitLive(1)
	c.checkPeak(2)
	c.resetPeak()
	var requeued, running string
	testutil.EventuallyWithin(t, odTimeout, "one job requeued and the other running", func() bool {
		requeued, running = "", ""
		for _, name := range runs {
			r := c.run(name)
			switch j := r.Jobs[0]; {
			case j.Status == api.StatusPending && j.Attempt == 1:
				requeued = name
			case j.Status == api.StatusRunning && j.Attempt == 0:
				running = name
			}
		}
		return requeued != "" && running != ""
	})
	// The requeued job waits for room, and `dstack ps` says so.
	testutil.EventuallyWithin(t, waitTimeout, "dstack ps to say why "+requeued+" waits", func() bool {
		out := c.ok("ps").stdout
		return strings.Contains(out, requeued+" long is pending: ") && strings.Contains(out, "at its maximum of 1")
	})
	if n, err := c.live(); err != nil || n != 1 {
		t.Errorf("%d containers live after the decrease (%v), want 1", n, err)
	}
	c.checkPeak(1)
}

// TestOnDemandDisableEnable: `dstack on-demand disable -f` terminates every
// instance and requeues their jobs; `enable` launches again for them.
func TestOnDemandDisableEnable(t *testing.T) {
	c := newODCluster(t)
	c.ok("on-demand", "limit", "-i", "local.small", "-m", "1")
	name := c.submit("long")
	c.waitRunLong(name, "to be running", func(r api.Run) bool { return r.Status == api.StatusRunning })
	c.waitLive(1)

	c.ok("on-demand", "disable", "-f")
	c.waitLive(0)
	c.waitRunLong(name, "to be requeued", func(r api.Run) bool {
		return r.Jobs[0].Status == api.StatusPending && r.Jobs[0].Attempt == 1
	})
	testutil.EventuallyWithin(t, waitTimeout, "dstack ps to say on-demand runners are disabled", func() bool {
		return strings.Contains(c.ok("ps").stdout, "on-demand runners are disabled")
	})

	c.ok("on-demand", "enable")
	c.waitRunLong(name, "to run again", func(r api.Run) bool {
		return r.Jobs[0].Status == api.StatusRunning && r.Jobs[0].Attempt == 1
	})
	c.waitLive(1)
	c.checkPeak(1)
}

// TestOnDemandServerKilledMidLaunch: the server is killed with SIGKILL as
// soon as the container it launches for a job runs (before or after it
// recorded the launch, or its runner joined: the race decides), and
// restarted on the same data directory: it adopts the container, the job
// finishes, the limit is never exceeded, and the idle instance is torn
// down.
//
// It waits for a running container, not a created one: a kill between
// Docker's create and start leaves a container that never starts, which
// only the register timeout (10 minutes) ends. The restarted server is the
// same replica (its identity is in the data directory): it finds the
// killed one's autoscaler lease its own and plans at once.
func TestOnDemandServerKilledMidLaunch(t *testing.T) {
	c := newODCluster(t, "--idle-timeout", "3s")
	c.ok("on-demand", "limit", "-i", "local.small", "-m", "1")
	name := c.submit("hello")
	testutil.EventuallyWithin(t, odTimeout, "a container of the server to run", func() bool {
		cs, err := c.containers()
		return err == nil && slices.ContainsFunc(cs, func(ct container.Summary) bool { return ct.State == container.StateRunning })
	})
	c.killServer()
	c.waitRunLong(name, "to be done", func(r api.Run) bool {
		if r.Status.Finished() && r.Status != api.StatusDone {
			t.Fatalf("run %s ended %s: %+v", name, r.Status, r.Jobs)
		}
		return r.Status == api.StatusDone
	})
	if r := c.ok("logs", name); r.stdout != "hello from an on-demand runner\n" {
		t.Errorf("logs of %s:\n%s", name, r)
	}
	c.waitNone()
	c.checkPeak(1)
	if _, ever := c.stats(); ever != 1 {
		t.Logf("%d containers in all (the server relaunched after the kill)", ever)
	}
}

// TestOnDemandWaitingReason: a job no allowed offer fits stays pending, and
// `dstack ps` says why; nothing is launched for it.
func TestOnDemandWaitingReason(t *testing.T) {
	c := newODCluster(t)
	c.ok("on-demand", "limit", "-i", "local.small", "-m", "1")
	name := c.submit("big")
	var out string
	testutil.EventuallyWithin(t, waitTimeout, "dstack ps to say why "+name+" waits", func() bool {
		out = c.ok("ps").stdout
		return strings.Contains(out, name+" big is pending: ")
	})
	if !strings.Contains(out, "no limit allows an on-demand instance with 64 CPUs") {
		t.Errorf("dstack ps does not name the job's 64 CPUs:\n%s", out)
	}
	if j := c.run(name).Jobs[0]; j.Status != api.StatusPending || !strings.Contains(j.StatusReason, "64 CPUs") {
		t.Errorf("job = %s (%q), want pending with a reason", j.Status, j.StatusReason)
	}
	c.checkPeak(0)
}

// waitRunLong is waitRun with odTimeout.
func (c *odCluster) waitRunLong(name, what string, ok func(api.Run) bool) {
	c.t.Helper()
	testutil.EventuallyWithin(c.t, odTimeout, "run "+name+" "+what, func() bool { return ok(c.run(name)) })
}
