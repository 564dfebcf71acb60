package server_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/backend/kubernetes"
	"github.com/dstackai/dstack/executor/executortest"
	"github.com/dstackai/dstack/internal/kubetest"
	"github.com/dstackai/dstack/internal/testutil"
	"github.com/dstackai/dstack/server"
	"github.com/dstackai/dstack/server/servertest"
)

// TestKubernetesRealKubelet runs a real runner Pod end to end on a real
// kubelet with containerd (where this host can run one; skipped, saying
// why, where it cannot): the server configured with a runner image (FROM
// scratch: dstack-runner and busybox's sh, imported into the node's
// containerd) launches a Pod for a pending job; the kubelet starts it with
// its Secret's token; the runner joins over the Pod network, runs the job;
// after the idle timeout the server deletes the Pod.
func TestKubernetesRealKubelet(t *testing.T) {
	c, e := kubeletServer(t, 5*time.Second)
	ctx := context.Background()
	if _, err := e.admin.LimitPut(ctx, api.LimitPutRequest{Region: kubetest.ContextName, InstanceType: "local.real", Max: 1}, false); err != nil {
		t.Fatal(err)
	}
	submitted := time.Now()
	submitIndependentJobs(t, e.admin, e.codeID, 1)
	var pod *corev1.Pod
	testutil.EventuallyWithin(t, time.Minute, "the runner Pod", func() bool {
		list, err := c.Client.CoreV1().Pods("dstack").List(ctx, metav1.ListOptions{})
		if err != nil || len(list.Items) == 0 {
			return false
		}
		pod = &list.Items[0]
		return true
	})
	podAt := time.Now()
	t.Logf("pending job → runner Pod created: %s", podAt.Sub(submitted))
	defer func() {
		if t.Failed() {
			logs, err := c.Client.CoreV1().Pods("dstack").GetLogs(pod.Name, &corev1.PodLogOptions{}).DoRaw(context.Background())
			t.Logf("the runner Pod's log (%v):\n%s", err, logs)
		}
	}()
	row := waitRunnerListed(t, e, pod.Name, 2*time.Minute)
	t.Logf("runner Pod created → runner registered on a real kubelet: %s", time.Since(podAt))
	if row.Backend != kubernetes.Name || row.InstanceType != "local.real" || row.Hostname != "real-1" {
		t.Errorf("runners shows %+v, want backend kubernetes, local.real on real-1", row)
	}
	testutil.EventuallyWithin(t, 2*time.Minute, "the job done", func() bool {
		runs, err := e.admin.RunList(ctx, true)
		return err == nil && len(runs) == 1 && runs[0].Status == api.StatusDone
	})
	t.Logf("runner Pod created → job done: %s", time.Since(podAt))
	testutil.EventuallyWithin(t, 2*time.Minute, "the idle runner Pod deleted", func() bool {
		_, err := c.Client.CoreV1().Pods("dstack").Get(ctx, pod.Name, metav1.GetOptions{})
		return err != nil
	})
}

// kubeletServer starts a cluster with one real kubelet node (instance type
// local.real; the test is skipped where this host cannot run one) and a
// server with the given idle timeout configured to launch runner Pods of a
// runner image imported into the node, which reach it over the Pod network.
func kubeletServer(t testing.TB, idle time.Duration) (*kubetest.Cluster, *apiEnv) {
	t.Helper()
	c := kubetest.Start(t)
	node := c.AddKubeletNode(t, "real-1", map[string]string{kubetest.LabelInstanceType: "local.real"})
	c.Namespace(t, "dstack")
	dir := t.TempDir()
	bin := buildRunner(t, dir)
	busybox, err := executortest.Busybox(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	const image = "docker.io/dstack/runner:kubelet-test"
	tarball := filepath.Join(dir, "runner.tar")
	if err := kubetest.WriteImage(tarball, image, map[string]string{"/dstack-runner": bin, "/bin/sh": busybox}, []string{"/dstack-runner"}); err != nil {
		t.Fatal(err)
	}
	node.ImportImage(t, tarball)
	return c, serveKubelet(t, c, image, func(cfg *server.Config) { cfg.IdleTimeout = idle })
}

// serveKubelet starts a server (configured further by configure) that the
// Pods of c's kubelet nodes reach, with c as its Kubernetes cluster and
// runnerImage ("" for the default) as the runner image.
func serveKubelet(t testing.TB, c *kubetest.Cluster, runnerImage string, configure func(*server.Config)) *apiEnv {
	t.Helper()
	// The Pods reach the server at this host's address through the node's
	// bridge, so it listens on every interface.
	hostIP := hostAddress(t)
	port := freePort(t)
	e := setup(t, servertest.WithConfig(func(cfg *server.Config) {
		cfg.Host, cfg.Port = "0.0.0.0", port
		cfg.ExternalURL = fmt.Sprintf("http://%s:%d", hostIP, port)
		configure(cfg)
	}))
	kc, err := os.ReadFile(c.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.KubernetesPut(context.Background(), api.KubernetesConfigRequest{Kubeconfig: string(kc), RunnerImage: runnerImage,
		ReserveMilliCPU: 1000, ReserveMemoryMiB: 1024}); err != nil {
		t.Fatal(err)
	}
	return e
}

// hostAddress is an IPv4 address of this host other than loopback.
func hostAddress(t testing.TB) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() {
			return n.IP.String()
		}
	}
	t.Skip("no IPv4 address but loopback: the Pods cannot reach the server")
	return ""
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
