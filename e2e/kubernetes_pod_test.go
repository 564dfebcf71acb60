package e2e

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/client"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"

	"github.com/dstackai/dstack/api"
	kubebackend "github.com/dstackai/dstack/backend/kubernetes"
	"github.com/dstackai/dstack/backend/local"
	"github.com/dstackai/dstack/internal/kubetest"
	"github.com/dstackai/dstack/internal/testutil"
)

// The Kubernetes backend's runner Pods, run for real: a real API server,
// scheduler and controller manager with kwok nodes (internal/kubetest) and
// a real dstack server and CLI; kwok plays the nodes, and dockerKubelet
// plays their kubelet with the Docker engine, running each Pod's container
// as podToDocker translates its spec, through the real CLI (logs,
// artifacts, runners). The real kubelet's run of a runner Pod, where the
// host can run one, is server/kubernetes_kubelet_test.go's.

// kubePodProject has a workflow that prints, writes an artifact, leaves an
// orphan process behind (as a job's background helper would) and lasts long
// enough for the runners of the other Pods to join and take the other jobs.
var kubePodProject = map[string]string{".dstack/workflows.yaml": `workflows:
  - name: hello
    provider: bash
    commands:
      - echo "hello from $(hostname)"
      - mkdir -p out && echo "made on $(hostname)" > out/result.txt
      - (sleep 1 &)
      - sleep 2
    artifacts: [out]
    resources:
      cpu: 1
      memory: 256MB
`}

// TestKubernetesRunnerPodRunsAJob: `dstack kubernetes config` with a runner
// image, a limit of 3 m5.large, 3 jobs: each gets a runner Pod, which the
// Docker "kubelet" runs as its spec says; each runner joins (dstack runners:
// backend kubernetes, region kubetest, m5.large, host its node), runs its
// job to done, whose logs and artifact the CLI shows; once idle, the server
// deletes the Pods, the kubelet stops their containers, the instances are
// terminated and nothing is left (Pods, Secrets, containers).
func TestKubernetesRunnerPodRunsAJob(t *testing.T) {
	kubePodScenario(t, 3, true)
}

// TestKubernetesRunnerPodDownloadsTheRunner: without --runner-image, the
// runner Pod's boot script downloads dstack-runner from the server, checks
// its SHA-256 and starts it, and it runs a job. The Pod's image
// (kubernetes.DefaultImage) cannot be pulled here: the kubelet runs the
// local runner image in its stead, whose busybox has wget and sha256sum
// (the default image has python3 and sha256sum: the script's python3
// branch is not run here).
func TestKubernetesRunnerPodDownloadsTheRunner(t *testing.T) {
	kubePodScenario(t, 1, false)
}

// kubePodScenario runs jobs jobs on as many m5.large runner Pods, with
// the runner image (withImage) or the default image's boot script.
func kubePodScenario(t *testing.T, jobs int, withImage bool) {
	if testing.Short() {
		t.Skip("end-to-end test: skipped with -short")
	}
	t.Parallel()
	docker := dockerEngine(t)
	const (
		ns    = "dstack"
		itype = "m5.large"
	)
	nodes := jobs
	kc := kubetest.Start(t)
	var nodeNames []string
	for i := range nodes {
		n := "kwok-m5-" + strconv.Itoa(i+1)
		// 2 CPUs: the engine refuses --cpus above the machine's.
		kc.AddNode(t, kubetest.Node{Name: n, InstanceType: itype, CPU: 2, MemoryMiB: 2048})
		nodeNames = append(nodeNames, n)
	}
	kc.AddNode(t, kubetest.Node{Name: "kwok-c5-1", InstanceType: "c5.xlarge", CPU: 2, MemoryMiB: 4096})
	kc.Namespace(t, ns)
	t.Logf("kube control plane up in %s", kc.StartupTime.Round(time.Millisecond))

	ctx := context.Background()
	image, err := local.BuildImage(ctx, docker, bins.runner)
	if err != nil {
		t.Fatal(err)
	}
	kl := startDockerKubelet(t, docker, kc.Client, ns)
	config := []string{"kubernetes", "config", "--kubeconfig", kc.Kubeconfig, "--context", kubetest.ContextName, "--namespace", ns}
	if withImage {
		config = append(config, "--runner-image", image)
	} else {
		kl.standIn = map[string]string{kubebackend.DefaultImage: image}
	}

	// The Pods reach the server through the Docker bridge's gateway.
	gw := dockerGateway(t, docker)
	port := strconv.Itoa(freePort(t))
	c := newCluster(t, "", "--host", "0.0.0.0", "--port", port, "--external-url", "http://"+gw+":"+port,
		"--idle-timeout", "3s")
	proj := project(t, kubePodProject)
	ok := func(args ...string) result {
		t.Helper()
		r := c.dstack(proj, args...)
		if r.code != 0 {
			t.Fatalf("%s", r)
		}
		return r
	}
	if r := ok(config...); !strings.Contains(r.stdout, itype) {
		t.Errorf("dstack kubernetes config does not list %s:\n%s", itype, r)
	}
	ok("on-demand", "limit", "-r", kubetest.ContextName, "-i", itype, "--max", strconv.Itoa(nodes))

	var names []string
	for range jobs {
		names = append(names, runName(t, ok("run", "-d", "hello").stdout))
	}
	for _, name := range names {
		testutil.EventuallyWithin(t, odTimeout, "run "+name+" to be done", func() bool {
			r := c.run(name)
			if r.Status.Finished() && r.Status != api.StatusDone {
				t.Fatalf("run %s ended %s: %+v", name, r.Status, r.Jobs)
			}
			return r.Status == api.StatusDone
		})
	}
	pods := kl.podsSeen()
	if len(pods) != jobs {
		t.Fatalf("%d runner Pods for %d jobs and a limit of %d", len(pods), jobs, nodes)
	}

	// What the user sees: the runners, the logs, the artifacts. Each Pod's
	// runner joins, whether or not a job was left for it.
	var runners []api.Runner
	testutil.EventuallyWithin(t, odTimeout, "dstack runners to list the runner of every Pod", func() bool {
		runners = runners[:0]
		for _, r := range c.runners() {
			if r.Backend != "" {
				runners = append(runners, r)
			}
		}
		return len(runners) == len(pods)
	})
	for _, r := range runners {
		p, ok := pods[r.Name]
		switch {
		case !ok:
			t.Errorf("runner %s is named after no runner Pod (%v)", r.Name, slices.Collect(maps.Keys(pods)))
		case r.Backend != "kubernetes" || r.Region != kubetest.ContextName || r.InstanceType != itype ||
			r.PurchaseType != api.PurchaseOnDemand || r.Hostname != p.node:
			t.Errorf("runner %s = backend %q, region %q, type %q, %s, host %q; want kubernetes, %s, %s, on-demand, host %s",
				r.Name, r.Backend, r.Region, r.InstanceType, r.PurchaseType, r.Hostname, kubetest.ContextName, itype, p.node)
		case !slices.Contains(nodeNames, p.node):
			t.Errorf("Pod %s ran on %s, not a node of %s", r.Name, p.node, itype)
		}
	}
	out := t.TempDir()
	for _, name := range names {
		job := c.run(name).Jobs[0]
		logs := ok("logs", name).stdout
		if want := "hello from " + job.RunnerName + "\n"; logs != want {
			t.Errorf("dstack logs %s = %q, want %q", name, logs, want)
		}
		dir := filepath.Join(out, name)
		ok("artifacts", "download", name, "-o", dir)
		got := readFile(t, filepath.Join(dir, "hello", "out", "result.txt"))
		if want := "made on " + job.RunnerName + "\n"; got != want {
			t.Errorf("artifact of %s = %q, want %q", name, got, want)
		}
	}

	// Idle teardown: the server deletes the Pods, the kubelet stops them.
	testutil.EventuallyWithin(t, odTimeout, "every runner Pod and its Secret to be gone", func() bool {
		p, err := kc.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil || len(p.Items) > 0 {
			return false
		}
		s, err := kc.Client.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{})
		return err == nil && len(s.Items) == 0
	})
	kl.waitStopped(t, odTimeout)
	for name, p := range kl.podsSeen() {
		if p.exitCode != 0 {
			t.Errorf("the runner of Pod %s exited with code %d after SIGTERM (137: killed at the end of its grace period)", name, p.exitCode)
		}
		// The job leaves a process behind; the runner, PID 1, reaps it
		// when it ends (internal/initproc).
		if p.zombies > 0 {
			t.Errorf("Pod %s's container held %d zombie process(es) after its job: the runner, its PID 1, reaped no orphan", name, p.zombies)
		}
	}
	testutil.EventuallyWithin(t, waitTimeout, "every instance to be terminated and its runner offline", func() bool {
		for _, r := range c.runners() {
			if r.Backend != "" && (r.Status != api.RunnerOffline || (r.InstanceState != "terminated" && r.InstanceState != "gone")) {
				return false
			}
		}
		return true
	})
	if left := kl.containers(t); len(left) > 0 {
		t.Errorf("%d runner containers left: %v", len(left), left)
	}

	// The figures.
	var submitted []time.Time
	for _, name := range names {
		submitted = append(submitted, c.run(name).Jobs[0].SubmittedAt)
	}
	var seen []time.Time
	var toPod, toJoin, toBind, bindToSecret, secretToStart, startToJoin []time.Duration
	for _, r := range runners {
		p := pods[r.Name]
		seen = append(seen, p.seen)
		toJoin = append(toJoin, r.RegisteredAt.Sub(p.seen))
		toBind = append(toBind, p.bound.Sub(p.seen))
		bindToSecret = append(bindToSecret, p.secrets.Sub(p.bound))
		secretToStart = append(secretToStart, p.started.Sub(p.secrets))
		startToJoin = append(startToJoin, r.RegisteredAt.Sub(p.started))
	}
	slices.SortFunc(submitted, time.Time.Compare)
	slices.SortFunc(seen, time.Time.Compare)
	for i := range submitted {
		toPod = append(toPod, seen[i].Sub(submitted[i]))
	}
	t.Logf("%d jobs, %d runner Pods, Docker as their kubelet:", len(names), len(pods))
	t.Logf("  pending job → runner Pod created: %s", percentiles(toPod))
	t.Logf("  runner Pod created → runner registered: %s", percentiles(toJoin))
	t.Logf("    of which created → bound to a node (scheduler): %s", percentiles(toBind))
	t.Logf("    bound → its Secret read: %s", percentiles(bindToSecret))
	t.Logf("    Secret read → container started (docker create and start): %s", percentiles(secretToStart))
	t.Logf("    container started → runner registered: %s", percentiles(startToJoin))
}

// percentiles is "p50 X, p99 Y (n)" of ds, nearest rank.
func percentiles(ds []time.Duration) string {
	s := slices.Clone(ds)
	slices.Sort(s)
	at := func(p float64) time.Duration {
		i := int(p*float64(len(s))+0.999999) - 1
		return s[max(0, min(i, len(s)-1))].Round(time.Millisecond)
	}
	return fmt.Sprintf("p50 %s, p99 %s (n=%d)", at(0.5), at(0.99), len(s))
}

// dockerEngine is a client of the Docker engine; without one the test is
// skipped (failed under CI).
func dockerEngine(t *testing.T) *client.Client {
	t.Helper()
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
	return docker
}

// dockerGateway is the host's address on the default bridge, where
// containers reach it.
func dockerGateway(t *testing.T, docker *client.Client) string {
	t.Helper()
	n, err := docker.NetworkInspect(context.Background(), "bridge", client.NetworkInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range n.Network.IPAM.Config {
		if c.Gateway.Is4() {
			return c.Gateway.String()
		}
		if c.Subnet.Addr().Is4() && c.Subnet.Bits() <= 30 {
			return c.Subnet.Masked().Addr().Next().String()
		}
	}
	t.Fatalf("the bridge network has no IPv4 gateway: %+v", n.Network.IPAM)
	return netip.Addr{}.String()
}

// dockerKubelet plays the kubelet of every node for the Pods of one
// namespace: it watches them, runs a bound Pod's container with the Docker
// engine (waiting for the Secrets its env names, as the kubelet does), and
// stops it with the Pod's grace period once the Pod is deleted, then
// removes it with its volumes.
type dockerKubelet struct {
	t      *testing.T
	docker *client.Client
	kube   kubernetes.Interface
	ns     string
	// standIn maps an image the Pods name to the local one run instead,
	// where the Pod's cannot be pulled here.
	standIn map[string]string

	mu   sync.Mutex
	pods map[types.UID]*kubeletPod
	wg   sync.WaitGroup
}

// kubeletPod is what the kubelet knows of one Pod.
type kubeletPod struct {
	name, node string
	seen       time.Time // the watch's first sight of the Pod: its creation
	bound      time.Time // the first sight of it bound to a node
	secrets    time.Time // the Secrets its env names found
	started    time.Time // its container started
	id         string    // its container
	exitCode   int       // the container's, once stopped
	zombies    int       // zombie processes in the container just before its stop
	starting   bool
	stopping   bool
	startDone  chan struct{}
	stopDone   chan struct{}
}

func startDockerKubelet(t *testing.T, docker *client.Client, kube kubernetes.Interface, ns string) *dockerKubelet {
	k := &dockerKubelet{t: t, docker: docker, kube: kube, ns: ns, pods: map[types.UID]*kubeletPod{}}
	ctx, cancel := context.WithCancel(context.Background())
	k.wg.Go(func() { k.run(ctx) })
	t.Cleanup(func() {
		cancel()
		k.wg.Wait()
		for _, id := range k.containers(t) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			if _, err := docker.ContainerRemove(ctx, id, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true}); err != nil && !cerrdefs.IsNotFound(err) {
				t.Errorf("remove container %s: %v", id, err)
			}
			cancel()
		}
	})
	return k
}

// run lists and watches the namespace's Pods until ctx ends.
func (k *dockerKubelet) run(ctx context.Context) {
	pods := k.kube.CoreV1().Pods(k.ns)
	for ctx.Err() == nil {
		list, err := pods.List(ctx, metav1.ListOptions{})
		if err != nil {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		for i := range list.Items {
			k.sync(ctx, &list.Items[i], false)
		}
		w, err := pods.Watch(ctx, metav1.ListOptions{ResourceVersion: list.ResourceVersion})
		if err != nil {
			continue
		}
		for ev := range w.ResultChan() {
			if p, ok := ev.Object.(*corev1.Pod); ok {
				k.sync(ctx, p, ev.Type == watch.Deleted)
			}
		}
		w.Stop()
	}
}

// sync acts on a Pod's latest state: start a bound one, stop a deleted one.
func (k *dockerKubelet) sync(ctx context.Context, pod *corev1.Pod, deleted bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	p := k.pods[pod.UID]
	if p == nil {
		p = &kubeletPod{name: pod.Name, seen: time.Now(), exitCode: -1, startDone: make(chan struct{}), stopDone: make(chan struct{})}
		k.pods[pod.UID] = p
	}
	switch {
	case (deleted || pod.DeletionTimestamp != nil) && !p.stopping:
		p.stopping = true
		grace := int64(corev1.DefaultTerminationGracePeriodSeconds)
		if pod.DeletionGracePeriodSeconds != nil {
			grace = *pod.DeletionGracePeriodSeconds
		} else if pod.Spec.TerminationGracePeriodSeconds != nil {
			grace = *pod.Spec.TerminationGracePeriodSeconds
		}
		if !p.starting {
			p.starting = true
			close(p.startDone)
		}
		k.wg.Go(func() { k.stop(p, int(grace)) })
	case pod.Spec.NodeName != "" && !p.starting && !p.stopping:
		p.starting = true
		p.node, p.bound = pod.Spec.NodeName, time.Now()
		pod := pod.DeepCopy()
		k.wg.Go(func() {
			defer close(p.startDone)
			k.start(ctx, p, pod)
		})
	}
}

// start runs a bound Pod's container.
func (k *dockerKubelet) start(ctx context.Context, p *kubeletPod, pod *corev1.Pod) {
	secrets := map[string]*corev1.Secret{}
	for _, ev := range pod.Spec.Containers[0].Env {
		ref := ev.ValueFrom
		if ref == nil || ref.SecretKeyRef == nil || secrets[ref.SecretKeyRef.Name] != nil {
			continue
		}
		// The backend creates the Secret just after the Pod: the kubelet
		// waits for it.
		for {
			s, err := k.kube.CoreV1().Secrets(k.ns).Get(ctx, ref.SecretKeyRef.Name, metav1.GetOptions{})
			if err == nil {
				secrets[s.Name] = s
				break
			}
			if !apierrors.IsNotFound(err) || ctx.Err() != nil || time.Since(p.seen) > 30*time.Second {
				k.t.Errorf("Pod %s: secret %s: %v", pod.Name, ref.SecretKeyRef.Name, err)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	k.mu.Lock()
	p.secrets = time.Now()
	k.mu.Unlock()
	dp, err := podToDocker(pod, secrets)
	if err != nil {
		k.t.Errorf("the Docker kubelet cannot run %v", err)
		return
	}
	if img, ok := k.standIn[dp.Config.Image]; ok {
		dp.Config.Image = img
	}
	created, err := k.docker.ContainerCreate(ctx, client.ContainerCreateOptions{Config: dp.Config, HostConfig: dp.Host, Name: dp.Name})
	if err != nil {
		k.t.Errorf("Pod %s: create its container: %v", pod.Name, err)
		return
	}
	k.mu.Lock()
	p.id = created.ID
	k.mu.Unlock()
	if _, err := k.docker.ContainerStart(ctx, created.ID, client.ContainerStartOptions{}); err != nil {
		k.t.Errorf("Pod %s: start its container: %v", pod.Name, err)
		return
	}
	k.mu.Lock()
	p.started = time.Now()
	k.mu.Unlock()
}

// stop stops a deleted Pod's container as the kubelet does: SIGTERM, and
// SIGKILL after the grace period; then removes it with its volumes.
func (k *dockerKubelet) stop(p *kubeletPod, grace int) {
	defer close(p.stopDone)
	<-p.startDone
	k.mu.Lock()
	id := p.id
	k.mu.Unlock()
	if id == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(grace+30)*time.Second)
	defer cancel()
	zombies, err := k.zombies(ctx, id)
	if err != nil {
		k.t.Errorf("Pod %s: %v", p.name, err)
	}
	if _, err := k.docker.ContainerStop(ctx, id, client.ContainerStopOptions{Timeout: &grace}); err != nil {
		k.t.Errorf("Pod %s: stop its container: %v", p.name, err)
		return
	}
	res, err := k.docker.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil {
		k.t.Errorf("Pod %s: inspect its container: %v", p.name, err)
		return
	}
	if _, err := k.docker.ContainerRemove(ctx, id, client.ContainerRemoveOptions{RemoveVolumes: true}); err != nil {
		k.t.Errorf("Pod %s: remove its container: %v", p.name, err)
	}
	k.mu.Lock()
	p.exitCode, p.zombies = res.Container.State.ExitCode, zombies
	k.mu.Unlock()
}

// zombies counts the zombie processes in a container, with the image's ps
// (the engine's `top` lists the container's cgroup, which a process leaves
// when it exits: a zombie is not there).
func (k *dockerKubelet) zombies(ctx context.Context, id string) (int, error) {
	ex, err := k.docker.ExecCreate(ctx, id, client.ExecCreateOptions{Cmd: []string{"ps", "-o", "stat"}, AttachStdout: true, AttachStderr: true})
	if err != nil {
		return 0, fmt.Errorf("count zombies: %w", err)
	}
	att, err := k.docker.ExecAttach(ctx, ex.ID, client.ExecAttachOptions{})
	if err != nil {
		return 0, fmt.Errorf("count zombies: %w", err)
	}
	defer att.Close()
	var out, errOut bytes.Buffer
	if _, err := stdcopy.StdCopy(&out, &errOut, att.Reader); err != nil {
		return 0, fmt.Errorf("count zombies: ps -o stat: %w", err)
	}
	if errOut.Len() > 0 {
		return 0, fmt.Errorf("count zombies: ps -o stat: %s", errOut.String())
	}
	n := 0
	for _, line := range strings.Split(out.String(), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "Z") {
			n++
		}
	}
	return n, nil
}

// podsSeen is a copy of what the kubelet knows of each Pod, by name.
func (k *dockerKubelet) podsSeen() map[string]kubeletPod {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := map[string]kubeletPod{}
	for _, p := range k.pods {
		out[p.name] = *p
	}
	return out
}

// waitStopped waits until every Pod seen has been stopped.
func (k *dockerKubelet) waitStopped(t *testing.T, timeout time.Duration) {
	t.Helper()
	k.mu.Lock()
	var pods []*kubeletPod
	for _, p := range k.pods {
		pods = append(pods, p)
	}
	k.mu.Unlock()
	deadline := time.After(timeout)
	for _, p := range pods {
		select {
		case <-p.stopDone:
		case <-deadline:
			t.Fatalf("the kubelet did not stop Pod %s's container within %s", p.name, timeout)
		}
	}
}

// containers lists the IDs of the kubelet's containers, of any state.
func (k *dockerKubelet) containers(t *testing.T) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := k.docker.ContainerList(ctx, client.ContainerListOptions{All: true,
		Filters: make(client.Filters).Add("label", labelPodNamespace+"="+k.ns)})
	if err != nil {
		t.Errorf("list the kubelet's containers: %v", err)
		return nil
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	var ids []string
	for _, c := range res.Items {
		if _, ok := k.pods[types.UID(c.Labels[labelPodUID])]; ok {
			ids = append(ids, c.ID)
		}
	}
	return ids
}
