package kubetest

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
)

// Labels AddNode sets, as the cloud providers, Karpenter and NVIDIA's GPU
// feature discovery do.
const (
	LabelInstanceType = corev1.LabelInstanceTypeStable // node.kubernetes.io/instance-type
	LabelGPUProduct   = "nvidia.com/gpu.product"
	LabelGPUCount     = "nvidia.com/gpu.count"
	LabelCapacityType = "karpenter.sh/capacity-type"
	ResourceGPU       = corev1.ResourceName("nvidia.com/gpu")
)

// Node describes a fake node.
type Node struct {
	Name         string
	InstanceType string // node.kubernetes.io/instance-type
	CPU          int    // allocatable cores
	MemoryMiB    int64  // allocatable memory
	GPUs         int    // allocatable nvidia.com/gpu
	GPUProduct   string // nvidia.com/gpu.product, when set
	Spot         bool   // karpenter.sh/capacity-type=spot
	// Pods is the allocatable Pod count; 0 means 110, the kubelet's default.
	Pods   int
	Labels map[string]string // more labels
	Taints []corev1.Taint
}

// AddNode creates a kwok node and waits until it is Ready and schedulable.
func (c *Cluster) AddNode(t testing.TB, n Node) *corev1.Node {
	t.Helper()
	ctx := context.Background()
	labels := map[string]string{
		corev1.LabelHostname:   n.Name,
		corev1.LabelOSStable:   "linux",
		corev1.LabelArchStable: "amd64",
		"type":                 "kwok",
	}
	if n.InstanceType != "" {
		labels[LabelInstanceType] = n.InstanceType
	}
	if n.GPUProduct != "" {
		labels[LabelGPUProduct] = n.GPUProduct
	}
	if n.GPUs > 0 {
		labels[LabelGPUCount] = strconv.Itoa(n.GPUs)
	}
	if n.Spot {
		labels[LabelCapacityType] = "spot"
	}
	for k, v := range n.Labels {
		labels[k] = v
	}
	pods := n.Pods
	if pods == 0 {
		pods = 110
	}
	res := corev1.ResourceList{
		corev1.ResourceCPU:              *resource.NewQuantity(int64(n.CPU), resource.DecimalSI),
		corev1.ResourceMemory:           *resource.NewQuantity(n.MemoryMiB<<20, resource.BinarySI),
		corev1.ResourcePods:             *resource.NewQuantity(int64(pods), resource.DecimalSI),
		corev1.ResourceEphemeralStorage: resource.MustParse("100Gi"),
	}
	if n.GPUs > 0 {
		res[ResourceGPU] = *resource.NewQuantity(int64(n.GPUs), resource.DecimalSI)
	}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:        n.Name,
			Labels:      labels,
			Annotations: map[string]string{FakeNodeAnnotation: "fake", "node.alpha.kubernetes.io/ttl": "0"},
		},
		Spec: corev1.NodeSpec{Taints: n.Taints},
		// A node registers with its capacity in one create, as the kubelet
		// does; kwok keeps it and fills in the conditions.
		Status: corev1.NodeStatus{Capacity: res, Allocatable: res.DeepCopy()},
	}
	if _, err := c.Client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		t.Fatalf("kubetest: create node %s: %v", n.Name, err)
	}
	var got *corev1.Node
	err := c.poll(ctx, 30*time.Second, func(ctx context.Context) (bool, error) {
		var err error
		got, err = c.Client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return nodeSchedulable(got), nil
	})
	if err != nil {
		var conds []corev1.NodeCondition
		if got != nil {
			conds = got.Status.Conditions
		}
		t.Fatalf("kubetest: node %s did not become Ready (is kwok running?): %v; its conditions: %+v", n.Name, err, conds)
	}
	return got
}

// nodeSchedulable says the node is Ready and carries none of the taints the
// node lifecycle controller puts on a node that is not.
func nodeSchedulable(n *corev1.Node) bool {
	ready := false
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
			ready = true
		}
	}
	for _, t := range n.Spec.Taints {
		if t.Key == corev1.TaintNodeNotReady || t.Key == corev1.TaintNodeUnreachable {
			return false
		}
	}
	return ready
}

// RemoveNode deletes a node, as a cloud autoscaler does when it takes the
// machine away (a spot reclaim): its Pods stay as they were until the
// controller manager's pod GC deletes them, 40 to 60s later (its quarantine
// of orphaned Pods), as in a real cluster. DrainNode is the polite way.
func (c *Cluster) RemoveNode(t testing.TB, name string) {
	t.Helper()
	err := c.Client.CoreV1().Nodes().Delete(context.Background(), name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		t.Fatalf("kubetest: delete node %s: %v", name, err)
	}
}

// DrainNode does what `kubectl drain` and Karpenter's termination do: cordon
// the node, evict each of its Pods through the eviction API, wait for them to
// be gone, then delete the node.
func (c *Cluster) DrainNode(t testing.TB, name string) {
	t.Helper()
	ctx := context.Background()
	node, err := c.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("kubetest: get node %s: %v", name, err)
	}
	node.Spec.Unschedulable = true
	if _, err := c.Client.CoreV1().Nodes().Update(ctx, node, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("kubetest: cordon node %s: %v", name, err)
	}
	pods, err := c.Client.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + name})
	if err != nil {
		t.Fatalf("kubetest: list the pods of node %s: %v", name, err)
	}
	for _, p := range pods.Items {
		c.EvictPod(t, p.Namespace, p.Name)
	}
	// The node must stay until kwok has played its Pods' deletion: Pods of a
	// node already gone are left to the pod GC, which takes a minute.
	err = c.poll(ctx, 60*time.Second, func(ctx context.Context) (bool, error) {
		left, err := c.Client.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + name})
		return err == nil && len(left.Items) == 0, err
	})
	if err != nil {
		t.Fatalf("kubetest: the pods of node %s were evicted but are not gone: %v", name, err)
	}
	c.RemoveNode(t, name)
}

// EvictPod evicts a Pod through the eviction API (pods/eviction), as `kubectl
// drain`, Karpenter and the cluster autoscaler do: the API server checks
// PodDisruptionBudgets, then deletes the Pod gracefully.
func (c *Cluster) EvictPod(t testing.TB, namespace, name string) {
	t.Helper()
	err := c.Client.PolicyV1().Evictions(namespace).Evict(context.Background(), &policyv1.Eviction{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
	})
	if err != nil && !apierrors.IsNotFound(err) {
		t.Fatalf("kubetest: evict pod %s/%s: %v", namespace, name, err)
	}
}

// KubeletEvictPod does what the kubelet does to a Pod it evicts under node
// pressure: the Pod is not deleted but fails, with phase Failed, reason
// Evicted, the kubelet's message, a DisruptionTarget condition and its
// containers terminated (exit code 137).
func (c *Cluster) KubeletEvictPod(t testing.TB, namespace, name string) {
	t.Helper()
	ctx := context.Background()
	err := c.poll(ctx, 10*time.Second, func(ctx context.Context) (bool, error) {
		pod, err := c.Client.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		now := metav1.Now()
		msg := "The node was low on resource: memory. Threshold quantity: 100Mi, available: 51200Ki. "
		pod.Status.Phase = corev1.PodFailed
		pod.Status.Reason = "Evicted"
		pod.Status.Message = msg
		setCondition(pod, corev1.PodCondition{
			Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue, LastTransitionTime: now,
			Reason: "TerminationByKubelet", Message: msg,
		})
		setCondition(pod, corev1.PodCondition{Type: corev1.PodReady, Status: corev1.ConditionFalse, LastTransitionTime: now, Reason: "PodFailed"})
		setCondition(pod, corev1.PodCondition{Type: corev1.ContainersReady, Status: corev1.ConditionFalse, LastTransitionTime: now, Reason: "PodFailed"})
		for i := range pod.Status.ContainerStatuses {
			cs := &pod.Status.ContainerStatuses[i]
			var started metav1.Time
			if cs.State.Running != nil {
				started = cs.State.Running.StartedAt
			}
			cs.Ready = false
			cs.State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				ExitCode: 137, Reason: "Error", StartedAt: started, FinishedAt: now,
			}}
		}
		_, err = c.Client.CoreV1().Pods(namespace).UpdateStatus(ctx, pod, metav1.UpdateOptions{})
		if apierrors.IsConflict(err) {
			return false, nil
		}
		return err == nil, err
	})
	if err != nil {
		t.Fatalf("kubetest: mark pod %s/%s evicted: %v", namespace, name, err)
	}
}

func setCondition(pod *corev1.Pod, cond corev1.PodCondition) {
	for i := range pod.Status.Conditions {
		if pod.Status.Conditions[i].Type == cond.Type {
			pod.Status.Conditions[i] = cond
			return
		}
	}
	pod.Status.Conditions = append(pod.Status.Conditions, cond)
}

// poll calls cond every 50ms until it says done, returns an error, or timeout
// passes.
func (c *Cluster) poll(ctx context.Context, timeout time.Duration, cond wait.ConditionWithContextFunc) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := wait.PollUntilContextCancel(ctx, 50*time.Millisecond, true, cond); err != nil {
		return fmt.Errorf("after %s: %w", timeout, err)
	}
	return nil
}
