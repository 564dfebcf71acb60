package kubernetes

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/yaml"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/backend"
)

// TestOffers: the offers are the nodes' types at their purchase types,
// sized to the allocatable resources less the reserve, GPUs with the
// product and memory labels, price 0; nodes without the type label are not
// offered.
func TestOffers(t *testing.T) {
	t.Parallel()
	c := cluster(t)
	c.AddNode(t, kubetestNode("plain-1"))
	b := newBackend(t, c, namespace(t, c), nil)
	offers, err := b.Offers(ctxT(t), "kubetest")
	if err != nil {
		t.Fatal(err)
	}
	want := []backend.Offer{
		{Backend: Name, Region: "kubetest", InstanceType: typeGPU, CPUs: 3, MemoryMiB: 16384 - 256,
			GPUs: []api.GPU{{Name: "NVIDIA-A10G", MemoryMiB: 23028}}},
		{Backend: Name, Region: "kubetest", InstanceType: typeStd, CPUs: 1, MemoryMiB: 8192 - 256},
		{Backend: Name, Region: "kubetest", InstanceType: typeStd, Spot: true, CPUs: 1, MemoryMiB: 8192 - 256},
	}
	if !slices.EqualFunc(offers, want, func(a, b backend.Offer) bool {
		return a.Key() == b.Key() && a.CPUs == b.CPUs && a.MemoryMiB == b.MemoryMiB && slices.Equal(a.GPUs, b.GPUs) && a.PricePerHour == 0
	}) {
		t.Errorf("offers = %+v\nwant %+v", offers, want)
	}
	if _, err := b.Offers(ctxT(t), "elsewhere"); !errors.Is(err, backend.ErrInvalid) {
		t.Errorf("Offers(elsewhere) = %v, want ErrInvalid", err)
	}
}

// TestLaunchPod: a runner Pod is pinned to its type and purchase type,
// sized to the offer, labelled with the server's tags, runs the runner with
// its join token from a Secret the Pod owns, and is scheduled on a node of
// its type, which List reports as its host.
func TestLaunchPod(t *testing.T) {
	t.Parallel()
	c := cluster(t)
	ns := namespace(t, c)
	b := newBackend(t, c, ns, nil)
	server := "srv-" + randomHex(4)
	req := request(server, offerOf(typeStd, true), 1)
	got, err := b.Launch(ctxT(t), req)
	if err != nil || len(got) != 1 {
		t.Fatalf("Launch = %+v, %v", got, err)
	}
	pod, err := c.Client.CoreV1().Pods(ns).Get(ctxT(t), got[0].CloudID, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pod.Name != PodName(req.Instances[0].RecordID) {
		t.Errorf("Pod name %s, want %s", pod.Name, PodName(req.Instances[0].RecordID))
	}
	ctr := pod.Spec.Containers[0]
	if q := ctr.Resources.Requests[corev1.ResourceCPU]; q.MilliValue() != 1900 {
		t.Errorf("CPU request %s, want 1900m", q.String())
	}
	if q := ctr.Resources.Limits[corev1.ResourceMemory]; q.Value() != (8192-256)<<20 {
		t.Errorf("memory limit %s", q.String())
	}
	var tokenRef *corev1.SecretKeySelector
	for _, e := range ctr.Env {
		if e.Name == "DSTACK_JOIN_TOKEN" {
			if e.Value != "" || e.ValueFrom == nil {
				t.Errorf("the join token is in the Pod spec: %+v", e)
			} else {
				tokenRef = e.ValueFrom.SecretKeyRef
			}
		}
	}
	if tokenRef == nil {
		t.Fatal("no DSTACK_JOIN_TOKEN from a Secret")
	}
	sec, err := c.Client.CoreV1().Secrets(ns).Get(ctxT(t), tokenRef.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if string(sec.Data[tokenRef.Key]) != req.Instances[0].JoinToken {
		t.Errorf("the Secret holds %q", sec.Data[tokenRef.Key])
	}
	if len(sec.OwnerReferences) != 1 || sec.OwnerReferences[0].UID != pod.UID {
		t.Errorf("the Secret's owners are %+v, want the Pod %s", sec.OwnerReferences, pod.UID)
	}
	if pod.Labels[keyServerID] != server || pod.Labels[keyRecordID] != req.Instances[0].RecordID || pod.Labels[keyLaunchKey] != req.IdempotencyKey {
		t.Errorf("labels %v", pod.Labels)
	}
	var host string
	poll(t, 30*time.Second, "the Pod running on the spot node", func() bool {
		ins, err := b.List(ctxT(t), server)
		if err != nil || len(ins) != 1 {
			return false
		}
		host = ins[0].Host
		return ins[0].State == backend.StateRunning
	})
	if host != "spot-1" {
		t.Errorf("the spot Pod runs on %q, want spot-1", host)
	}
	// The Secret goes with its Pod (the garbage collector follows the owner).
	if err := b.Terminate(ctxT(t), []string{pod.Name}); err != nil {
		t.Fatal(err)
	}
	poll(t, 60*time.Second, "the Secret deleted with its Pod", func() bool {
		_, err := c.Client.CoreV1().Secrets(ns).Get(ctxT(t), tokenRef.Name, metav1.GetOptions{})
		return err != nil
	})
}

// TestLaunchAfterCrashBeforeSecret: a server killed between the Pod's
// create and its Secret's leaves a Pod without a token; the launch called
// again with the same key creates the Secret and launches nothing more.
func TestLaunchAfterCrashBeforeSecret(t *testing.T) {
	t.Parallel()
	c := cluster(t)
	ns := namespace(t, c)
	b := newBackend(t, c, ns, nil)
	req := request("srv-"+randomHex(4), offerOf(typeStd, false), 2)
	first, err := b.Launch(ctxT(t), req)
	if err != nil {
		t.Fatal(err)
	}
	name := first[0].CloudID
	if err := c.Client.CoreV1().Secrets(ns).Delete(ctxT(t), name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	again, err := newBackend(t, c, ns, nil).Launch(ctxT(t), req)
	if err != nil || len(again) != 2 || again[0].CloudID != name {
		t.Fatalf("launch again = %+v, %v", again, err)
	}
	if _, err := c.Client.CoreV1().Secrets(ns).Get(ctxT(t), name, metav1.GetOptions{}); err != nil {
		t.Errorf("the Secret is not made again: %v", err)
	}
	pods, _ := c.Client.CoreV1().Pods(ns).List(ctxT(t), metav1.ListOptions{})
	if len(pods.Items) != 2 {
		t.Errorf("%d Pods, want 2", len(pods.Items))
	}
}

// TestUnschedulableNeverFits: a Pod of a type whose nodes are all gone is
// reported gone with ErrNoCapacity as soon as the scheduler says no node
// matches, long before the schedule timeout.
func TestUnschedulableNeverFits(t *testing.T) {
	t.Parallel()
	c := cluster(t)
	c.AddNode(t, kubetestNodeOf("lone-1", "c5.large"))
	ns := namespace(t, c)
	b := newBackend(t, c, ns, func(c *Config) { c.ScheduleTimeout = time.Hour })
	server := "srv-" + randomHex(4)
	// The offer is known; its only node goes before the Pod is placed.
	if _, err := b.Offers(ctxT(t), "kubetest"); err != nil {
		t.Fatal(err)
	}
	c.RemoveNode(t, "lone-1")
	start := time.Now()
	if _, err := b.Launch(ctxT(t), request(server, offerOf("c5.large", false), 1)); err != nil {
		t.Fatal(err)
	}
	var in backend.Instance
	poll(t, 60*time.Second, "the Pod found unschedulable", func() bool {
		ins, err := b.List(ctxT(t), server)
		if err != nil || len(ins) != 1 {
			return false
		}
		in = ins[0]
		return in.State == backend.StateGone
	})
	if !errors.Is(in.Failure, backend.ErrNoCapacity) || !strings.Contains(backend.Reason(in.Failure), "didn't match") {
		t.Errorf("failure = %v, want ErrNoCapacity with the scheduler's words", in.Failure)
	}
	t.Logf("unschedulable for good after %s", time.Since(start))
}

// TestUnschedulableTimeout: a Pod that waits for room (Insufficient cpu:
// the room may come) is a capacity error only after the schedule timeout.
func TestUnschedulableTimeout(t *testing.T) {
	t.Parallel()
	c := cluster(t)
	ns := namespace(t, c)
	b := newBackend(t, c, ns, func(c *Config) { c.ScheduleTimeout = 4 * time.Second })
	server := "srv-" + randomHex(4)
	// Two on-demand nodes of the type: a third Pod waits.
	got, err := b.Launch(ctxT(t), request(server, offerOf(typeStd, false), 3))
	if err != nil || len(got) != 3 {
		t.Fatalf("Launch = %+v, %v", got, err)
	}
	var waiting backend.Instance
	poll(t, 30*time.Second, "two Pods running, one unschedulable", func() bool {
		ins, err := b.List(ctxT(t), server)
		if err != nil {
			return false
		}
		running, pending := 0, 0
		for _, in := range ins {
			switch in.State {
			case backend.StateRunning:
				running++
			case backend.StatePending:
				pending++
				waiting = in
			}
		}
		return running == 2 && pending == 1
	})
	if time.Since(waiting.LaunchedAt) >= 4*time.Second {
		t.Skip("the machine is too slow for this timing")
	}
	poll(t, 30*time.Second, "the waiting Pod timed out", func() bool {
		ins, _ := b.List(ctxT(t), server)
		for _, in := range ins {
			if in.CloudID == waiting.CloudID {
				return in.State == backend.StateGone && errors.Is(in.Failure, backend.ErrNoCapacity)
			}
		}
		return false
	})
	if d := time.Since(waiting.LaunchedAt); d < 4*time.Second {
		t.Errorf("gone after %s, before the timeout", d)
	}
}

// TestEvictedPodGone: a Pod evicted through the eviction API (a drain) or
// by the kubelet under pressure is gone at once, and the watch tells the
// server.
func TestEvictedPodGone(t *testing.T) {
	t.Parallel()
	c := cluster(t)
	ns := namespace(t, c)
	var gone atomic.Int32
	b := newBackend(t, c, ns, func(c *Config) { c.OnGone = func() { gone.Add(1) } })
	server := "srv-" + randomHex(4)
	got, err := b.Launch(ctxT(t), request(server, offerOf(typeStd, false), 2))
	if err != nil {
		t.Fatal(err)
	}
	states := func() map[string]backend.InstanceState {
		ins, err := b.List(ctxT(t), server)
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]backend.InstanceState{}
		for _, in := range ins {
			m[in.CloudID] = in.State
		}
		return m
	}
	poll(t, 30*time.Second, "both Pods running", func() bool {
		s := states()
		return s[got[0].CloudID] == backend.StateRunning && s[got[1].CloudID] == backend.StateRunning
	})
	c.EvictPod(t, ns, got[0].CloudID)
	poll(t, 10*time.Second, "the watch telling of the eviction", func() bool { return gone.Load() > 0 })
	if s := states()[got[0].CloudID]; s != backend.StateGone && s != "" {
		t.Errorf("the evicted Pod is %s", s)
	}
	n := gone.Load()
	c.KubeletEvictPod(t, ns, got[1].CloudID)
	poll(t, 10*time.Second, "the watch telling of the kubelet's eviction", func() bool { return gone.Load() > n })
	if s := states()[got[1].CloudID]; s != backend.StateGone {
		t.Errorf("the Pod the kubelet evicted is %s", s)
	}
}

// TestCheckRBAC: the identity docs/kubernetes-rbac.yaml grants passes the
// check; one without pods/log and nodes watch is refused, naming both; a
// missing namespace and an unknown context are named too.
func TestCheckRBAC(t *testing.T) {
	t.Parallel()
	c := cluster(t)
	ns := namespace(t, c)
	rules, clusterRules := rbacManifest(t)
	good := c.UserKubeconfig(t, ns, rules, clusterRules)
	b := newBackend(t, c, ns, func(cfg *Config) { cfg.Kubeconfig = kubeconfig(t, good) })
	if err := b.Check(ctxT(t)); err != nil {
		t.Errorf("Check with the documented RBAC: %v", err)
	}

	var fewer []rbacv1.PolicyRule
	for _, r := range rules {
		if !slices.Contains(r.Resources, "pods/log") {
			fewer = append(fewer, r)
		}
	}
	bad := c.UserKubeconfig(t, ns, fewer, []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"list"}}})
	err := newBackend(t, c, ns, func(cfg *Config) { cfg.Kubeconfig = kubeconfig(t, bad) }).Check(ctxT(t))
	if !errors.Is(err, backend.ErrInvalid) || !strings.Contains(err.Error(), "get pods/log") || !strings.Contains(err.Error(), "watch nodes (cluster-wide)") ||
		strings.Contains(err.Error(), "create pods") {
		t.Errorf("Check without pods/log and nodes watch = %v", err)
	}

	err = newBackend(t, c, "nowhere", nil).Check(ctxT(t))
	if !errors.Is(err, backend.ErrInvalid) || !strings.Contains(err.Error(), `namespace "nowhere" does not exist`) {
		t.Errorf("Check of a missing namespace = %v", err)
	}
	_, err = New(Config{Kubeconfig: kubeconfig(t, c.Kubeconfig), Context: "prod"})
	if err == nil || !strings.Contains(err.Error(), `no context "prod": it has kubetest`) {
		t.Errorf("New with an unknown context = %v", err)
	}
}

// rbacManifest reads the Role's and ClusterRole's rules from
// docs/kubernetes-rbac.yaml.
func rbacManifest(t *testing.T) (rules, clusterRules []rbacv1.PolicyRule) {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	f, err := os.Open(filepath.Join(filepath.Dir(file), "..", "..", "docs", "kubernetes-rbac.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := yaml.NewYAMLOrJSONDecoder(f, 4096)
	for {
		var obj struct {
			Kind  string              `json:"kind"`
			Rules []rbacv1.PolicyRule `json:"rules"`
		}
		if err := dec.Decode(&obj); err != nil {
			break
		}
		switch obj.Kind {
		case "Role":
			rules = append(rules, obj.Rules...)
		case "ClusterRole":
			clusterRules = append(clusterRules, obj.Rules...)
		}
	}
	if len(rules) == 0 || len(clusterRules) == 0 {
		t.Fatal("docs/kubernetes-rbac.yaml has no Role or ClusterRole rules")
	}
	return rules, clusterRules
}

func TestNeverFits(t *testing.T) {
	t.Parallel()
	for msg, want := range map[string]bool{
		"0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.": true,
		"0/3 nodes are available: 1 Insufficient cpu, 2 node(s) didn't match Pod's node affinity/selector.":                                                              false,
		"0/2 nodes are available: 1 node(s) had untolerated taint {x: y}, 1 node(s) didn't match Pod's node affinity/selector.":                                          true,
		"0/1 nodes are available: 1 node(s) were unschedulable.":                                                                                                         false,
		"0/0 nodes are available.": true,
		"something else":           false,
	} {
		if got := neverFits(msg); got != want {
			t.Errorf("neverFits(%q) = %v", msg, got)
		}
	}
}

func TestPodName(t *testing.T) {
	t.Parallel()
	for _, id := range []string{"0123456789abcdef", "rec-ABCD-1-0", strings.Repeat("x", 70), "a_b"} {
		n := PodName(id)
		if n != PodName(id) || len(n) > 63 || strings.ToLower(n) != n || strings.Contains(n, "_") {
			t.Errorf("PodName(%q) = %q", id, n)
		}
	}
	if PodName("rec-A") == PodName("rec-a") {
		t.Error("two record IDs share a Pod name")
	}
}

func TestLabelValue(t *testing.T) {
	t.Parallel()
	if labelValue("abc-1") != "abc-1" {
		t.Error("a valid value is changed")
	}
	if v := labelValue("bt-abc:1/2 " + strings.Repeat("k", 60)); len(v) > 63 || !strings.HasPrefix(v, "h-") {
		t.Errorf("labelValue = %q", v)
	}
}

func TestConfigHidesKubeconfig(t *testing.T) {
	t.Parallel()
	c := Config{Kubeconfig: []byte("client-key-data: SECRET")}
	for _, s := range []string{c.String(), c.GoString()} {
		if strings.Contains(s, "SECRET") {
			t.Errorf("%s shows the kubeconfig", s)
		}
	}
	_ = context.Background
}
