package kubetest_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/dstackai/dstack/internal/kubetest"
)

// TestKubeletNode runs real containers on a real kubelet: a Pod scheduled to
// the node by its instance type runs an image imported FROM scratch, exits,
// and its log reads back through the API server; a long-running Pod is
// Running until deleted.
func TestKubeletNode(t *testing.T) {
	c := kubetest.Start(t)
	ctx := context.Background()
	c.Namespace(t, ns)
	begin := time.Now()
	node := c.AddKubeletNode(t, "real-1", map[string]string{kubetest.LabelInstanceType: "local.real"})
	t.Logf("kubelet node Ready in %s", time.Since(begin).Round(time.Millisecond))

	image := filepath.Join(t.TempDir(), "etcd.tar")
	if err := kubetest.WriteImage(image, "docker.io/kubetest/etcd:test", map[string]string{"/etcd": filepath.Join(kubetest.BinDir(), "etcd")}, []string{"/etcd"}); err != nil {
		t.Fatal(err)
	}
	node.ImportImage(t, image)

	p := pod("real-once", "local.real", "100m", "64Mi", 0)
	p.Spec.Containers[0].Image = "docker.io/kubetest/etcd:test"
	p.Spec.Containers[0].Command = nil
	p.Spec.Containers[0].Args = []string{"--version"}
	p.Spec.Containers[0].ImagePullPolicy = corev1.PullNever
	created := time.Now()
	if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	got := waitPod(t, c.Client, "real-once", "Succeeded", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodSucceeded })
	t.Logf("pod real-once: created → Succeeded on %s in %s", got.Spec.NodeName, time.Since(created).Round(time.Millisecond))
	logs, err := c.Client.CoreV1().Pods(ns).GetLogs("real-once", &corev1.PodLogOptions{}).DoRaw(ctx)
	if err != nil {
		t.Fatalf("pods/log: %v", err)
	}
	if !strings.Contains(string(logs), "etcd Version: 3.7.4") {
		t.Errorf("log of real-once = %q", logs)
	}

	p = pod("real-long", "local.real", "100m", "64Mi", 0)
	p.Spec.Containers[0].Image = kubetest.PauseImage
	p.Spec.Containers[0].Command = nil
	p.Spec.Containers[0].ImagePullPolicy = corev1.PullNever
	created = time.Now()
	if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	got = waitPod(t, c.Client, "real-long", "Running", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodRunning })
	t.Logf("pod real-long: created → Running in %s, IP %s", time.Since(created).Round(time.Millisecond), got.Status.PodIP)
	if err := c.Client.CoreV1().Pods(ns).Delete(ctx, "real-long", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitGone(t, c.Client, "real-long")
}
