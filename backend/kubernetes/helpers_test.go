package kubernetes

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"os"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/dstackai/dstack/backend"
	"github.com/dstackai/dstack/internal/kubetest"
)

// The node types every test cluster has.
const (
	typeStd = "m5.large"  // 2 CPUs, 8 GiB; on-demand (two nodes) and spot (one)
	typeGPU = "g5.xlarge" // 4 CPUs, 16 GiB, one A10G
)

// cluster starts a real control plane with kwok nodes of the standard
// types.
func cluster(t *testing.T) *kubetest.Cluster {
	t.Helper()
	c := kubetest.Start(t)
	for _, n := range []kubetest.Node{
		{Name: "std-1", InstanceType: typeStd, CPU: 2, MemoryMiB: 8192},
		{Name: "std-2", InstanceType: typeStd, CPU: 2, MemoryMiB: 8192},
		{Name: "spot-1", InstanceType: typeStd, CPU: 2, MemoryMiB: 8192, Spot: true},
		{Name: "gpu-1", InstanceType: typeGPU, CPU: 4, MemoryMiB: 16384, GPUs: 1, GPUProduct: "NVIDIA-A10G",
			Labels: map[string]string{LabelGPUMemory: "23028"}},
	} {
		c.AddNode(t, n)
	}
	return c
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// namespace makes a namespace of the test's own.
func namespace(t *testing.T, c *kubetest.Cluster) string {
	t.Helper()
	ns := "t-" + randomHex(4)
	c.Namespace(t, ns)
	return ns
}

// quota caps the namespace's Pods and waits until the quota is enforced.
func quota(t *testing.T, c *kubetest.Cluster, ns string, pods int) {
	t.Helper()
	ctx := context.Background()
	q := &corev1.ResourceQuota{
		ObjectMeta: metav1.ObjectMeta{Name: "pods"},
		Spec:       corev1.ResourceQuotaSpec{Hard: corev1.ResourceList{corev1.ResourcePods: *resource.NewQuantity(int64(pods), resource.DecimalSI)}},
	}
	if _, err := c.Client.CoreV1().ResourceQuotas(ns).Create(ctx, q, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	poll(t, 30*time.Second, "the quota's status", func() bool {
		got, err := c.Client.CoreV1().ResourceQuotas(ns).Get(ctx, "pods", metav1.GetOptions{})
		return err == nil && len(got.Status.Hard) > 0
	})
}

// kubeconfig is the admin kubeconfig's content.
func kubeconfig(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// newBackend makes a backend over c's admin kubeconfig, in ns.
func newBackend(t *testing.T, c *kubetest.Cluster, ns string, change func(*Config)) *Backend {
	t.Helper()
	cfg := Config{Kubeconfig: kubeconfig(t, c.Kubeconfig), Context: kubetest.ContextName, Namespace: ns, Logger: testLogger(t)}
	if change != nil {
		change(&cfg)
	}
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

// poll waits for cond, failing the test after timeout.
func poll(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		return cond(), nil
	})
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// request is a launch of n instances of offer by server.
func request(server string, offer backend.Offer, n int) backend.LaunchRequest {
	tag := randomHex(4)
	req := backend.LaunchRequest{
		Offer: offer, IdempotencyKey: "key-" + tag, ServerID: server, LimitID: "limit-" + tag,
		ServerURL: "http://dstack.example:3000",
	}
	for i := range n {
		req.Instances = append(req.Instances, backend.InstanceSpec{RecordID: randomHex(8), JoinToken: "jt-" + randomHex(8) + string(rune('a'+i))})
	}
	return req
}

func offerOf(typ string, spot bool) backend.Offer {
	return backend.Offer{Backend: Name, Region: kubetest.ContextName, InstanceType: typ, Spot: spot}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// kubetestNode is a node without an instance type label.
func kubetestNode(name string) kubetest.Node {
	return kubetest.Node{Name: name, CPU: 2, MemoryMiB: 4096}
}

// kubetestNodeOf is a 2-CPU node of typ.
func kubetestNodeOf(name, typ string) kubetest.Node {
	return kubetest.Node{Name: name, InstanceType: typ, CPU: 2, MemoryMiB: 4096}
}
