package autoscale_test

import (
	"context"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/autoscale"
	"github.com/dstackai/dstack/backend"
	"github.com/dstackai/dstack/backend/kubernetes"
	"github.com/dstackai/dstack/internal/kubefault"
	"github.com/dstackai/dstack/internal/kubetest"
	"github.com/dstackai/dstack/store"
)

// The fault suite and the property "never over a limit, never a leak" on
// the Kubernetes backend, against a real API server, scheduler and kwok
// nodes: the faults are the API server's (throttling with Retry-After,
// 500s, answers lost after a Pod was made, watches cut), the server killed
// between the intent and the Pod's create and between the create and the
// record, Pods that no node takes, Pods evicted under their jobs, and a
// labelled Pod the server does not know. A runner "joins" with the token
// in its Pod's Secret, as dstack-runner in the Pod would.

const (
	kubeStd    = "m5.large" // two on-demand nodes, room for one runner Pod each
	kubeTaint  = "c5.large" // one node, tainted: no runner Pod is ever placed
	kubeRegion = kubetest.ContextName
)

// kubeCluster is one control plane shared by a test's subtests.
func kubeCluster(t *testing.T) *kubetest.Cluster {
	t.Helper()
	c := kubetest.Start(t)
	for _, n := range []kubetest.Node{
		{Name: "std-1", InstanceType: kubeStd, CPU: 2, MemoryMiB: 8192},
		{Name: "std-2", InstanceType: kubeStd, CPU: 2, MemoryMiB: 8192},
		{Name: "tainted-1", InstanceType: kubeTaint, CPU: 2, MemoryMiB: 4096,
			Taints: []corev1.Taint{{Key: "dedicated", Value: "other-team", Effect: corev1.TaintEffectNoSchedule}}},
	} {
		c.AddNode(t, n)
	}
	return c
}

// kubeEnv is env (store, clock, user, controller) on a namespace of a
// real cluster, reached through a fault proxy.
type kubeEnv struct {
	*env
	cluster *kubetest.Cluster
	proxy   *kubefault.Proxy
	ns      string
	kube    *kubernetes.Backend
	gone    chan struct{}
}

func setupKube(t *testing.T, c *kubetest.Cluster, tweak func(*kubernetes.Config)) *kubeEnv {
	t.Helper()
	e := setup(t)
	k := &kubeEnv{env: e, cluster: c, proxy: kubefault.New(t, c.Config), ns: "as-" + strings.ToLower(e.id[len(e.id)-10:]), gone: make(chan struct{}, 1)}
	c.Namespace(t, k.ns)
	cfg := kubernetes.Config{REST: k.proxy.Config, RESTName: kubeRegion, Namespace: k.ns, ScheduleTimeout: time.Hour,
		Logger: slog.New(slog.NewTextHandler(tWriter{t}, nil)), OnGone: func() {
			select {
			case k.gone <- struct{}{}:
			default:
			}
		}}
	if tweak != nil {
		tweak(&cfg)
	}
	b, err := kubernetes.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	k.kube = b
	k.c = k.controller()
	return k
}

func (k *kubeEnv) controller() *autoscale.Controller {
	return k.env.controller(func(c *autoscale.Config) {
		c.Backends = backend.NewSet(k.kube)
		c.LaunchTimeout = 5 * time.Second
	})
}

func (k *kubeEnv) limit(typ string, max int) {
	k.t.Helper()
	_, err := k.st.LimitPut(k.ctx, store.LimitPutParams{
		ID: "l-" + typ, UserID: k.user.ID, Backend: kubernetes.Name, Region: kubeRegion,
		InstanceType: typ, Max: max, Now: k.clock.Now(),
	})
	if err != nil {
		k.t.Fatal(err)
	}
}

// pods lists the server's runner Pods straight from the API server.
func (k *kubeEnv) pods() []corev1.Pod {
	k.t.Helper()
	list, err := k.cluster.Client.CoreV1().Pods(k.ns).List(k.ctx, metav1.ListOptions{LabelSelector: kubernetes.LabelManagedBy + "=" + kubernetes.ManagedBy})
	if err != nil {
		k.t.Fatal(err)
	}
	return list.Items
}

// live counts the Pods of each limit that are not deleting or ended.
func (k *kubeEnv) live() map[string]int {
	out := map[string]int{}
	for _, p := range k.pods() {
		if p.DeletionTimestamp == nil && p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
			out[p.Annotations["dstack.ai/limit-id"]]++
		}
	}
	return out
}

// checkKube checks the store's and the cluster's counts against the limits.
func (k *kubeEnv) checkKube() {
	k.t.Helper()
	ls, err := k.st.LimitList(k.ctx, store.LimitListParams{})
	if err != nil {
		k.t.Fatal(err)
	}
	live := k.live()
	for _, l := range ls {
		if l.Instances > l.Max {
			k.t.Fatalf("limit %s counts %d instances, over its maximum %d", l.ID, l.Instances, l.Max)
		}
		if live[l.ID] > l.Max {
			k.t.Fatalf("the cluster has %d runner Pods of limit %s, over its maximum %d", live[l.ID], l.ID, l.Max)
		}
	}
}

// join registers the runner of a launched instance with the token in its
// Pod's Secret; nil while the Pod or its Secret is not there.
func (k *kubeEnv) join(in *store.Instance) *store.Runner {
	k.t.Helper()
	sec, err := k.cluster.Client.CoreV1().Secrets(k.ns).Get(k.ctx, in.CloudID, metav1.GetOptions{})
	if err != nil {
		return nil
	}
	_, r, err := k.st.InstanceRegister(k.ctx, store.InstanceRegisterParams{
		JoinTokenHash: autoscale.HashToken(string(sec.Data[kubernetes.SecretKey])),
		Runner: store.RunnerCreateParams{ID: "r-" + in.ID, Name: in.CloudID, Executor: "shell", Version: "test",
			Resources: api.HostResources{CPUs: 1, MemoryMiB: 7 << 10}, TokenHash: "rt-" + in.ID,
			TokenExpiresAt: k.clock.Now().Add(24 * time.Hour), Now: k.clock.Now()},
	})
	if err != nil {
		k.t.Fatalf("join instance %s (%s): %v", in.ID, in.CloudID, err)
	}
	return r
}

// podCreates matches the requests that create runner Pods.
func podCreates(r *http.Request) bool {
	return r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/pods")
}

// nth returns a hook that gives act to the first n requests match picks.
func nth(n int, match func(*http.Request) bool, act kubefault.Action, then func()) func(*http.Request) kubefault.Action {
	var mu sync.Mutex
	return func(r *http.Request) kubefault.Action {
		if !match(r) {
			return kubefault.Forward
		}
		mu.Lock()
		defer mu.Unlock()
		if n <= 0 {
			return kubefault.Forward
		}
		n--
		if then != nil {
			then()
		}
		return act
	}
}

func TestKubernetesFaults(t *testing.T) {
	t.Parallel()
	c := kubeCluster(t)
	const stray = grace + grace/2
	faults := []struct {
		name string
		// inject sets the fault up; crash, when set, is the fault's way to
		// kill the first pass.
		inject    func(k *kubeEnv, crash func())
		crashes   bool
		allowance time.Duration
		// fired, when set, says the fault happened (so that no case
		// passes without its fault).
		fired func(k *kubeEnv) bool
	}{
		{name: "throttled", inject: func(k *kubeEnv, _ func()) {
			k.proxy.SetHook(nth(3, podCreates, kubefault.Throttle, nil))
		}, fired: answered(kubefault.Throttle, 3)},
		{name: "internal error", inject: func(k *kubeEnv, _ func()) {
			k.proxy.SetHook(nth(1, podCreates, kubefault.Fail, nil))
		}, fired: answered(kubefault.Fail, 1)},
		{name: "answer lost after the Pod was made", inject: func(k *kubeEnv, _ func()) {
			k.proxy.SetHook(nth(2, podCreates, kubefault.LoseAnswer, nil))
		}, fired: answered(kubefault.LoseAnswer, 2)},
		{name: "lists fail", inject: func(k *kubeEnv, _ func()) {
			k.proxy.SetHook(nth(2, func(r *http.Request) bool {
				return r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/pods") && r.URL.Query().Get("watch") == ""
			}, kubefault.Fail, nil))
		}, fired: answered(kubefault.Fail, 2)},
		{name: "watches cut", inject: func(k *kubeEnv, _ func()) {
			k.proxy.CutWatches()
		}},
		{name: "crash between intent and Pod create", crashes: true, inject: func(k *kubeEnv, crash func()) {
			k.proxy.SetHook(nth(1, podCreates, kubefault.Drop, crash))
		}, fired: answered(kubefault.Drop, 1)},
		{name: "crash between Pod create and record", crashes: true, inject: func(k *kubeEnv, crash func()) {
			k.proxy.SetHook(nth(1, podCreates, kubefault.LoseAnswer, crash))
		}, fired: answered(kubefault.LoseAnswer, 1)},
		{name: "Pods no node takes: the next allowed offer", inject: func(k *kubeEnv, _ func()) {
			k.limit(kubeTaint, 2)
		}, fired: func(k *kubeEnv) bool {
			for _, in := range k.instances(store.InstanceGone) {
				if in.InstanceType == kubeTaint && strings.Contains(in.Reason, "launch refused") {
					return true
				}
			}
			return false
		}},
		{name: "a labelled Pod the server does not know", allowance: stray, inject: func(k *kubeEnv, _ func()) {
			req := backend.LaunchRequest{
				Offer:          backend.Offer{Backend: kubernetes.Name, Region: kubeRegion, InstanceType: kubeStd},
				IdempotencyKey: "manual", ServerID: k.id, LimitID: "l-deleted", ServerURL: "http://server:3000",
				Instances: []backend.InstanceSpec{{RecordID: "no-such-record", JoinToken: "t"}},
			}
			if _, err := k.kube.Launch(k.ctx, req); err != nil {
				k.t.Fatal(err)
			}
		}},
	}
	for _, fl := range faults {
		t.Run(fl.name, func(t *testing.T) {
			t.Parallel()
			k := setupKube(t, c, nil)
			k.limit(kubeStd, 2)
			jobs := []string{k.submit(small), k.submit(small), k.submit(small)}
			ctl := k.c
			ctx, cancel := context.WithCancel(k.ctx)
			defer cancel()
			fl.inject(k, cancel)
			if fl.crashes {
				_ = ctl.Step(ctx) // dies mid-pass
				k.checkKube()
				k.clock.Advance(leaseTTL)
				ctl = k.controller()
			}
			seenOver := map[string]time.Time{}
			for round := range 14 {
				if err := ctl.Step(k.ctx); err != nil {
					t.Logf("round %d: %v", round, err)
				}
				if fl.name == "watches cut" {
					k.proxy.CutWatches()
				}
				if fl.allowance == 0 {
					k.checkKube()
				} else {
					k.checkStray(seenOver, fl.allowance)
				}
				for _, in := range k.instances(store.InstanceLaunching) {
					if in.CloudID == "" {
						continue
					}
					if r := k.join(in); r != nil {
						if j := k.claim(r); j != nil {
							k.finish(j, r)
						}
					}
				}
				for _, r := range k.idleRunners() {
					if j := k.claim(r); j != nil {
						k.finish(j, r)
					}
				}
				k.clock.Advance(grace / 2)
			}
			k.proxy.SetHook(nil)
			k.clock.Advance(idleTimeout)
			for range 3 {
				if err := ctl.Step(k.ctx); err != nil {
					t.Logf("final: %v", err)
				}
				k.clock.Advance(grace)
			}
			for _, id := range jobs {
				if j := k.job(id); j.Status != api.StatusDone {
					t.Errorf("job %s is %s (%s), want done", id, j.Status, j.StatusReason)
				}
			}
			if live := k.live(); len(live) != 0 {
				t.Errorf("the cluster still runs runner Pods after the idle timeout and the grace period: %v", live)
			}
			if fl.fired != nil && !fl.fired(k) {
				t.Errorf("the fault never happened")
			}
			if n := len(k.instances(store.InstanceLaunching, store.InstanceRunning, store.InstanceTerminating)); n != 0 {
				t.Errorf("%d instance records still counted", n)
			}
		})
	}
}

// answered says the proxy gave act to at least n requests.
func answered(act kubefault.Action, n int) func(k *kubeEnv) bool {
	return func(k *kubeEnv) bool { return k.proxy.Count(act) >= n }
}

// checkStray is checkKube where a Pod nobody recorded may run over its
// limit until allowance after the test first saw it.
func (k *kubeEnv) checkStray(seen map[string]time.Time, allowance time.Duration) {
	k.t.Helper()
	for _, p := range k.pods() {
		if _, ok := seen[p.Name]; !ok {
			seen[p.Name] = k.clock.Now()
		}
		if p.Annotations["dstack.ai/limit-id"] == "l-deleted" && p.DeletionTimestamp == nil && k.clock.Now().Sub(seen[p.Name]) > allowance {
			k.t.Fatalf("the Pod nobody recorded, %s, still runs %s after it was first seen", p.Name, k.clock.Now().Sub(seen[p.Name]))
		}
	}
}

// TestKubernetesUnschedulableTriesNext: a runner Pod no node will take (its
// only node is tainted against it) is a capacity refusal: the record ends
// with the scheduler's words, the offer is marked unavailable, and the job
// gets the next allowed offer.
func TestKubernetesUnschedulableTriesNext(t *testing.T) {
	t.Parallel()
	k := setupKube(t, kubeCluster(t), nil)
	k.limit(kubeTaint, 1)
	jobID := k.submit(small)
	k.step()
	ins := k.instances(store.InstanceLaunching)
	if len(ins) != 1 || ins[0].InstanceType != kubeTaint {
		t.Fatalf("launching = %+v, want one %s", ins, kubeTaint)
	}
	waitGone(t, k, ins[0].CloudID)
	k.step()
	got, err := k.st.InstanceGet(k.ctx, ins[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != store.InstanceGone || !strings.Contains(got.Reason, "launch refused") || !strings.Contains(got.Reason, "untolerated taint") {
		t.Errorf("the unschedulable instance is %s (%q), want gone as a launch refused with the scheduler's words", got.State, got.Reason)
	}
	unavail, err := k.st.OfferUnavailableList(k.ctx, k.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	// The limit's capacity note is the scheduler's FailedScheduling
	// message, which it also writes as the Pod's PodScheduled condition.
	if !slices.ContainsFunc(unavail, func(u *store.OfferUnavailable) bool {
		return u.InstanceType == kubeTaint && strings.Contains(u.Reason, "nodes are available") && strings.Contains(u.Reason, "untolerated taint")
	}) {
		t.Errorf("offers unavailable = %+v, want %s with the scheduler's words", unavail, kubeTaint)
	}
	k.limit(kubeStd, 1)
	k.step()
	ins = k.instances(store.InstanceLaunching)
	if len(ins) != 1 || ins[0].InstanceType != kubeStd || ins[0].JobID != jobID {
		t.Fatalf("launching after the refusal = %+v, want one %s for %s", ins, kubeStd, jobID)
	}
}

// waitGone waits until the backend lists a Pod as gone.
func waitGone(t *testing.T, k *kubeEnv, name string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		list, err := k.kube.List(k.ctx, k.id)
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range list {
			if in.CloudID == name && in.State == backend.StateGone {
				return
			}
		}
		select {
		case <-k.gone:
		case <-time.After(100 * time.Millisecond):
		}
	}
	t.Fatalf("Pod %s not gone after a minute", name)
}

// TestKubernetesEvictionRequeuesAtOnce: a runner Pod evicted under its job
// (a drain) requeues the job at once: the watch has the next pass reconcile
// without waiting for ReconcileEvery, and the job gets a new Pod.
func TestKubernetesEvictionRequeuesAtOnce(t *testing.T) {
	t.Parallel()
	k := setupKube(t, kubeCluster(t), nil)
	k.c = k.env.controller(func(c *autoscale.Config) {
		c.Backends = backend.NewSet(k.kube)
		c.ReconcileEvery = time.Hour
	})
	k.limit(kubeStd, 2)
	jobID := k.submit(small)
	k.step()
	ins := k.instances(store.InstanceLaunching)
	if len(ins) != 1 {
		t.Fatalf("launching = %+v", ins)
	}
	r := k.join(ins[0])
	if j := k.claim(r); j == nil || j.ID != jobID {
		t.Fatalf("claimed %+v", j)
	}
	k.step()
	select { // the watch is up and quiet
	case <-k.gone:
	default:
	}
	evicted := time.Now()
	k.cluster.EvictPod(t, k.ns, ins[0].CloudID)
	select {
	case <-k.gone:
	case <-time.After(30 * time.Second):
		t.Fatal("the watch did not tell of the eviction")
	}
	k.c.ReconcileSoon()
	k.step()
	t.Logf("eviction → job requeued and a new Pod launched: %s", time.Since(evicted))
	if got, _ := k.st.InstanceGet(k.ctx, ins[0].ID); got.State != store.InstanceGone {
		t.Errorf("the evicted instance is %s, want gone", got.State)
	}
	j := k.job(jobID)
	if j.Status != api.StatusPending || j.Attempt != 1 {
		t.Fatalf("job is %s on attempt %d (%s), want pending on attempt 1", j.Status, j.Attempt, j.StatusReason)
	}
	next := k.instances(store.InstanceLaunching)
	if len(next) != 1 || next[0].JobID != jobID || next[0].CloudID == ins[0].CloudID {
		t.Errorf("launching after the eviction = %+v, want a new Pod for %s", next, jobID)
	}
}

// TestKubernetesPendingToPod measures how long a pending job waits for its
// runner Pod: from the submission to the Pod in the API server, one job at
// a time through the controller's pass.
func TestKubernetesPendingToPod(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("a measurement")
	}
	k := setupKube(t, kubeCluster(t), nil)
	const n = 40
	k.limit(kubeStd, n)
	var took []time.Duration
	for range n {
		start := time.Now()
		k.submit(small)
		k.step()
		if len(k.pods()) != len(took)+1 {
			t.Fatalf("%d Pods after %d jobs", len(k.pods()), len(took)+1)
		}
		took = append(took, time.Since(start))
	}
	slices.Sort(took)
	t.Logf("pending job → runner Pod created, %d jobs: p50 %s, p99 %s, max %s", n, took[n/2], took[n*99/100], took[n-1])
}
