package kubetest_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/dstackai/dstack/internal/kubetest"
)

const ns = "dstack"

// pod is a runner-like Pod pinned to an instance type and asking for cpu and
// memory (and GPUs).
func pod(name, instanceType, cpu, memory string, gpus int64) *corev1.Pod {
	req := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse(cpu),
		corev1.ResourceMemory: resource.MustParse(memory),
	}
	if gpus > 0 {
		req[kubetest.ResourceGPU] = *resource.NewQuantity(gpus, resource.DecimalSI)
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "dstack-runner"}},
		Spec: corev1.PodSpec{
			NodeSelector:  map[string]string{kubetest.LabelInstanceType: instanceType},
			RestartPolicy: corev1.RestartPolicyNever,
			Containers: []corev1.Container{{
				Name:      "runner",
				Image:     "dstack-runner:test",
				Command:   []string{"/dstack-runner"},
				Resources: corev1.ResourceRequirements{Requests: req, Limits: req},
			}},
		},
	}
}

// waitPod polls the Pod until cond holds, and returns it.
func waitPod(t *testing.T, c kubernetes.Interface, name string, what string, cond func(*corev1.Pod) bool) *corev1.Pod {
	t.Helper()
	var p *corev1.Pod
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := wait.PollUntilContextCancel(ctx, 50*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		var err error
		p, err = c.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return cond(p), nil
	})
	if err != nil {
		t.Fatalf("pod %s: %s: %v; status %+v", name, what, err, p.Status)
	}
	return p
}

func condition(p *corev1.Pod, typ corev1.PodConditionType) *corev1.PodCondition {
	for i := range p.Status.Conditions {
		if p.Status.Conditions[i].Type == typ {
			return &p.Status.Conditions[i]
		}
	}
	return nil
}

// TestCluster plays what the Kubernetes backend meets: nodes of three
// instance types, Pods scheduled on the right one by node selector and run,
// a Pod no node can fit, both kinds of eviction, deletion, and a user whose
// RBAC lacks a verb.
func TestCluster(t *testing.T) {
	c := kubetest.Start(t)
	t.Logf("cluster started in %s", c.StartupTime.Round(time.Millisecond))
	ctx := context.Background()

	if _, err := os.Stat(c.Kubeconfig); err != nil {
		t.Fatal(err)
	}
	raw, err := clientcmd.LoadFromFile(c.Kubeconfig)
	if err != nil || raw.CurrentContext != kubetest.ContextName {
		t.Fatalf("admin kubeconfig: context %q, err %v", raw.CurrentContext, err)
	}

	c.Namespace(t, ns)
	nodeStart := time.Now()
	c.AddNode(t, kubetest.Node{Name: "cpu-1", InstanceType: "m5.xlarge", CPU: 4, MemoryMiB: 16 << 10})
	c.AddNode(t, kubetest.Node{Name: "gpu-1", InstanceType: "g5.xlarge", CPU: 4, MemoryMiB: 16 << 10, GPUs: 1, GPUProduct: "NVIDIA-A10G"})
	c.AddNode(t, kubetest.Node{Name: "spot-1", InstanceType: "c5.large", CPU: 2, MemoryMiB: 4 << 10, Spot: true})
	t.Logf("3 nodes Ready in %s", time.Since(nodeStart).Round(time.Millisecond))

	gpuNode, err := c.Client.CoreV1().Nodes().Get(ctx, "gpu-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := gpuNode.Status.Allocatable[kubetest.ResourceGPU]; got.Value() != 1 {
		t.Errorf("gpu-1 allocatable nvidia.com/gpu = %s, want 1", got.String())
	}
	if got := gpuNode.Labels[kubetest.LabelGPUProduct]; got != "NVIDIA-A10G" {
		t.Errorf("gpu-1 label %s = %q", kubetest.LabelGPUProduct, got)
	}
	spot, err := c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: kubetest.LabelCapacityType + "=spot"})
	if err != nil || len(spot.Items) != 1 || spot.Items[0].Name != "spot-1" {
		t.Fatalf("spot nodes: %v, %v", spot, err)
	}

	// Scheduled by the scheduler on the node of its type, then Running.
	for _, tc := range []struct{ pod, typ, node string }{
		{"run-gpu", "g5.xlarge", "gpu-1"},
		{"run-spot", "c5.large", "spot-1"},
	} {
		created := time.Now()
		var gpus int64
		if tc.typ == "g5.xlarge" {
			gpus = 1
		}
		if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, pod(tc.pod, tc.typ, "1", "1Gi", gpus), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		p := waitPod(t, c.Client, tc.pod, "Running", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodRunning })
		if p.Spec.NodeName != tc.node {
			t.Errorf("pod %s on node %q, want %q", tc.pod, p.Spec.NodeName, tc.node)
		}
		if p.Status.PodIP == "" {
			t.Errorf("pod %s has no IP", tc.pod)
		}
		t.Logf("pod %s: created → Running on %s in %s", tc.pod, p.Spec.NodeName, time.Since(created).Round(time.Millisecond))
	}

	// A Pod that fits no node: the scheduler says so, in the PodScheduled
	// condition and a FailedScheduling event.
	if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, pod("too-big", "g5.xlarge", "1", "1Gi", 2), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	p := waitPod(t, c.Client, "too-big", "Unschedulable", func(p *corev1.Pod) bool {
		cond := condition(p, corev1.PodScheduled)
		return cond != nil && cond.Status == corev1.ConditionFalse && cond.Reason == corev1.PodReasonUnschedulable
	})
	t.Logf("unschedulable: %s", condition(p, corev1.PodScheduled).Message)
	var event corev1.Event
	err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		evs, err := c.Client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: fields.Set{
			"involvedObject.name": "too-big", "reason": "FailedScheduling",
		}.String()})
		if err != nil || len(evs.Items) == 0 {
			return false, err
		}
		event = evs.Items[0]
		return true, nil
	})
	if err != nil {
		t.Fatalf("no FailedScheduling event for too-big: %v", err)
	}
	if !strings.Contains(event.Message, "Insufficient nvidia.com/gpu") {
		t.Errorf("FailedScheduling says %q, want Insufficient nvidia.com/gpu", event.Message)
	}

	// Evicted by the kubelet under node pressure: Failed, Evicted, not deleted.
	c.KubeletEvictPod(t, ns, "run-spot")
	p, err = c.Client.CoreV1().Pods(ns).Get(ctx, "run-spot", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Status.Phase != corev1.PodFailed || p.Status.Reason != "Evicted" {
		t.Errorf("after a kubelet eviction: phase %s reason %q, want Failed Evicted", p.Status.Phase, p.Status.Reason)
	}
	// Evicted through the API (a drain): deleted, and gone.
	c.EvictPod(t, ns, "run-gpu")
	waitGone(t, c.Client, "run-gpu")
	// A plain delete completes too.
	if err := c.Client.CoreV1().Pods(ns).Delete(ctx, "run-spot", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitGone(t, c.Client, "run-spot")

	// RBAC is enforced: a user allowed to read Pods is refused to create one.
	path := c.UserKubeconfig(t, ns,
		[]rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "watch"}}},
		[]rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"list"}}})
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		t.Fatal(err)
	}
	user, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := user.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{}); err != nil {
		t.Errorf("restricted user lists pods: %v", err)
	}
	if _, err := user.CoreV1().Nodes().List(ctx, metav1.ListOptions{}); err != nil {
		t.Errorf("restricted user lists nodes: %v", err)
	}
	_, err = user.CoreV1().Pods(ns).Create(ctx, pod("denied", "m5.xlarge", "1", "1Gi", 0), metav1.CreateOptions{})
	if !apierrors.IsForbidden(err) {
		t.Fatalf("restricted user creates a pod: %v, want 403 Forbidden", err)
	}
	t.Logf("refused: %v", err)
	if _, err := user.CoreV1().Pods("default").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("restricted user lists pods of another namespace: %v, want 403 Forbidden", err)
	}

	// A node taken away: its Pods are deleted by the controller manager's
	// pod GC once the node is gone; DrainNode evicts them at once.
	if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, pod("on-cpu", "m5.xlarge", "1", "1Gi", 0), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitPod(t, c.Client, "on-cpu", "Running", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodRunning })
	c.DrainNode(t, "cpu-1")
	waitGone(t, c.Client, "on-cpu")
	if _, err := c.Client.CoreV1().Nodes().Get(ctx, "cpu-1", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("drained node still there: %v", err)
	}
}

func waitGone(t *testing.T, c kubernetes.Interface, name string) {
	t.Helper()
	start := time.Now()
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := c.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return false, err
	})
	if err != nil {
		t.Fatalf("pod %s not gone: %v", name, err)
	}
	t.Logf("pod %s gone in %s", name, time.Since(start).Round(time.Millisecond))
}

// TestClustersAreIsolated starts two clusters at once: each sees only its
// own nodes.
func TestClustersAreIsolated(t *testing.T) {
	t.Parallel()
	a, b := kubetest.Start(t), kubetest.Start(t)
	a.AddNode(t, kubetest.Node{Name: "only-in-a", InstanceType: "m5.large", CPU: 2, MemoryMiB: 8 << 10})
	nodes, err := b.Client.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes.Items) != 0 {
		t.Errorf("cluster b sees %d nodes, want 0", len(nodes.Items))
	}
}
