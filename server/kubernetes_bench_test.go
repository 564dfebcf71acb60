package server_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/backend/kubernetes"
	"github.com/dstackai/dstack/internal/kubetest"
	"github.com/dstackai/dstack/runner"
)

// BenchmarkKubernetesPendingToRegistered measures, through the whole server
// (API, its own autoscaler woken by the submission, the backend) against a
// real kube-apiserver, kube-scheduler and a kwok node, one job at a time:
//
//   - pending job → runner Pod created: from the submission to the Pod's
//     first sight by a watch;
//   - Pod created → running: the scheduler binds it and kwok reports it
//     running;
//   - Pod created → runner registered: kwok runs no process, so at the Pod's
//     running dstack-runner is started in this process with the Pod's
//     server URL and the token of its Secret, as the container would; its
//     registration time is the server's.
//
// Each job sleeps so that its runner stays busy and the next job needs a Pod
// of its own; the node is large and the reserve leaves each Pod one core,
// so that they all fit. Run it with a count of jobs:
//
//	go test -run '^$' -bench BenchmarkKubernetesPendingToRegistered -benchtime 30x ./server/
func BenchmarkKubernetesPendingToRegistered(b *testing.B) {
	const ns = "dstack"
	c := kubetest.Start(b)
	c.AddNode(b, kubetest.Node{Name: "kwok-big-1", InstanceType: "m5.16xlarge", CPU: 64, MemoryMiB: 256 << 10, Pods: 200})
	c.Namespace(b, ns)
	kc := readKubeconfig(b, c)
	e := setup(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := e.admin.KubernetesPut(ctx, api.KubernetesConfigRequest{Kubeconfig: kc,
		ReserveMilliCPU: 63000, ReserveMemoryMiB: 255 << 10}); err != nil {
		b.Fatal(err)
	}
	if _, err := e.admin.LimitPut(ctx, api.LimitPutRequest{Region: kubetest.ContextName, InstanceType: "m5.16xlarge", Max: 1000}, false); err != nil {
		b.Fatal(err)
	}
	pods := watchPods(ctx, b, c, ns)
	var toPod, toRunning, toJoin []time.Duration
	var runners []*runner.Runner
	defer func() {
		cancel()
		for _, r := range runners {
			r.Stop()
		}
	}()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	dir := b.TempDir()
	for i := 0; b.Loop(); i++ {
		start := time.Now()
		if _, err := e.admin.RunSubmit(ctx, api.RunSubmitRequest{CodeID: e.codeID, Workflow: "w0",
			Jobs: []api.JobSpec{{Workflow: "w0", Provider: "bash", Commands: []string{"sleep 600"}}}}); err != nil {
			b.Fatal(err)
		}
		p := pods.next(b, i)
		toPod = append(toPod, p.created.Sub(start))
		running := pods.running(b, p.name)
		toRunning = append(toRunning, running.Sub(p.created))
		sec, err := c.Client.CoreV1().Secrets(ns).Get(ctx, p.name, metav1.GetOptions{})
		if err != nil {
			b.Fatal(err)
		}
		r, err := runner.New(runner.Config{
			Server: p.server, JoinToken: string(sec.Data[kubernetes.SecretKey]), Name: p.name,
			DataDir: filepath.Join(dir, p.name, "data"), WorkDir: filepath.Join(dir, p.name, "work"), Executor: "shell",
		}, quiet)
		if err != nil {
			b.Fatal(err)
		}
		if err := r.Start(ctx); err != nil {
			b.Fatal(err)
		}
		runners = append(runners, r)
		row := waitRunnerListed(b, e, p.name, time.Minute)
		toJoin = append(toJoin, row.RegisteredAt.Sub(p.created))
	}
	b.StopTimer()
	reportPercentiles(b, "pending-to-pod", toPod)
	reportPercentiles(b, "pod-to-running", toRunning)
	reportPercentiles(b, "pod-to-registered", toJoin)
}

// BenchmarkKubernetesRealKubelet measures, one job at a time, the same
// path on a real kubelet with containerd (skipped where this host cannot run
// one): pending job → runner Pod created, and Pod created → runner
// registered, the runner started by the kubelet from the runner image with
// its Secret's token and joining over the Pod network. The node fits one
// runner Pod: after each job the server deletes the idle Pod (a one-second
// idle timeout), outside the timed part, before the next job.
//
//	go test -run '^$' -bench BenchmarkKubernetesRealKubelet -benchtime 10x ./server/
func BenchmarkKubernetesRealKubelet(b *testing.B) {
	c, e := kubeletServer(b, time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := e.admin.LimitPut(ctx, api.LimitPutRequest{Region: kubetest.ContextName, InstanceType: "local.real", Max: 1}, false); err != nil {
		b.Fatal(err)
	}
	pods := watchPods(ctx, b, c, "dstack")
	var toPod, toJoin []time.Duration
	for i := 0; b.Loop(); i++ {
		start := time.Now()
		submitIndependentJobs(b, e.admin, e.codeID, 1)
		p := pods.next(b, i)
		toPod = append(toPod, p.created.Sub(start))
		row := waitRunnerListed(b, e, p.name, 2*time.Minute)
		toJoin = append(toJoin, row.RegisteredAt.Sub(p.created))
		b.StopTimer()
		pods.deleted(b, p.name)
		b.StartTimer()
	}
	b.StopTimer()
	reportPercentiles(b, "pending-to-pod", toPod)
	reportPercentiles(b, "pod-to-registered", toJoin)
}

// reportPercentiles reports p50 and p99 of ds as the benchmark's metrics.
func reportPercentiles(b *testing.B, name string, ds []time.Duration) {
	p50, p99 := pct(ds, 0.50), pct(ds, 0.99)
	b.ReportMetric(float64(p50)/float64(time.Millisecond), name+"-p50-ms")
	b.ReportMetric(float64(p99)/float64(time.Millisecond), name+"-p99-ms")
	b.Logf("%s: p50 %s, p99 %s, max %s (n=%d)", name, p50, p99, pct(ds, 1), len(ds))
}

// podWatch records when a watch first saw each runner Pod, and when it saw
// it running.
type podWatch struct {
	mu      sync.Mutex
	changed chan struct{}
	order   []seenPod
	runAt   map[string]time.Time
	gone    map[string]bool
}

type seenPod struct {
	name    string
	server  string // DSTACK_SERVER of its container
	created time.Time
}

func watchPods(ctx context.Context, tb testing.TB, c *kubetest.Cluster, ns string) *podWatch {
	tb.Helper()
	w, err := c.Client.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	pw := &podWatch{changed: make(chan struct{}, 1), runAt: map[string]time.Time{}, gone: map[string]bool{}}
	go func() {
		defer w.Stop()
		seen := map[string]bool{}
		for ev := range w.ResultChan() {
			now := time.Now()
			p, ok := ev.Object.(*corev1.Pod)
			if !ok {
				continue
			}
			pw.mu.Lock()
			if ev.Type == watch.Deleted {
				pw.gone[p.Name] = true
			} else if !seen[p.Name] {
				seen[p.Name] = true
				server := ""
				for _, ev := range p.Spec.Containers[0].Env {
					if ev.Name == "DSTACK_SERVER" {
						server = ev.Value
					}
				}
				pw.order = append(pw.order, seenPod{name: p.Name, server: server, created: now})
			}
			if _, ok := pw.runAt[p.Name]; !ok && p.Status.Phase == corev1.PodRunning {
				pw.runAt[p.Name] = now
			}
			pw.mu.Unlock()
			select {
			case pw.changed <- struct{}{}:
			default:
			}
		}
	}()
	return pw
}

// next waits for the i-th Pod (from 0).
func (pw *podWatch) next(tb testing.TB, i int) seenPod {
	tb.Helper()
	var p seenPod
	pw.wait(tb, fmt.Sprintf("runner Pod #%d", i+1), func() bool {
		if len(pw.order) <= i {
			return false
		}
		p = pw.order[i]
		return true
	})
	return p
}

// running waits for the Pod called name to run and returns when it did.
func (pw *podWatch) running(tb testing.TB, name string) time.Time {
	tb.Helper()
	var at time.Time
	pw.wait(tb, "runner Pod "+name+" running", func() bool {
		var ok bool
		at, ok = pw.runAt[name]
		return ok
	})
	return at
}

// deleted waits for the Pod called name to be deleted.
func (pw *podWatch) deleted(tb testing.TB, name string) {
	tb.Helper()
	pw.wait(tb, "runner Pod "+name+" deleted", func() bool { return pw.gone[name] })
}

// wait waits, for a minute at most, until cond (called under pw.mu) holds,
// woken by each event of the watch.
func (pw *podWatch) wait(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.After(time.Minute)
	for {
		pw.mu.Lock()
		ok := cond()
		pw.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-pw.changed:
		case <-deadline:
			tb.Fatalf("%s: not within a minute", what)
		}
	}
}

// pct is the nearest-rank p-th quantile of ds.
func pct(ds []time.Duration, p float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(p*float64(len(s))+0.999999) - 1
	return s[max(0, min(i, len(s)-1))].Round(time.Millisecond)
}

func readKubeconfig(tb testing.TB, c *kubetest.Cluster) string {
	tb.Helper()
	kc, err := os.ReadFile(c.Kubeconfig)
	if err != nil {
		tb.Fatal(err)
	}
	return string(kc)
}
