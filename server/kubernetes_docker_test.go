package server_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/backend/kubernetes"
	"github.com/dstackai/dstack/backend/local"
	"github.com/dstackai/dstack/internal/kubetest"
)

// TestKubernetesPodOnDocker proves the runner Pod's spec where no kubelet
// runs containers (kwok does not): the Pod the backend made, for a pending
// job, is run by the Docker engine as a kubelet would run it (its command
// and arguments, its environment with the Secret's token and the node's
// name resolved, its emptyDir at /dstack, its CPU and memory limits, the
// host's network so the server on 127.0.0.1 is reached), and the runner in
// it joins, takes the job and runs it, in both ways the Pod gets its
// runner: downloaded from the server's /runner/download by the Pod's
// script, and from the runner image. The image is the local backend's
// (FROM scratch: dstack-runner and busybox), since no image can be pulled
// here: the default python image is replaced by it for the download case,
// whose script needs only sh, wget and sha256sum.
func TestKubernetesPodOnDocker(t *testing.T) {
	t.Parallel()
	docker, err := client.New(client.FromEnv)
	if err == nil {
		t.Cleanup(func() { _ = docker.Close() })
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err = docker.Ping(ctx, client.PingOptions{})
		cancel()
	}
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("no Docker engine, and CI is set: %v", err)
		}
		t.Skipf("no Docker engine: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "dstack-runner")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, "github.com/dstackai/dstack/cmd/dstack-runner")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build dstack-runner: %v\n%s", err, out)
	}
	ctx := context.Background()
	image, err := local.BuildImage(ctx, docker, bin)
	if err != nil {
		t.Fatal(err)
	}
	c := kubetest.Start(t)
	for i := range 2 { // one for each case's Pod
		c.AddNode(t, kubetest.Node{Name: fmt.Sprintf("node-std-%d", i), InstanceType: "m5.large", CPU: 2, MemoryMiB: 4096})
	}
	kc, err := os.ReadFile(c.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	for i, mode := range []struct{ name, runnerImage string }{
		{"runner downloaded from the server", ""},
		{"runner from the runner image", image},
	} {
		t.Run(mode.name, func(t *testing.T) {
			ns := fmt.Sprintf("docker-%d", i)
			c.Namespace(t, ns)
			e := setup(t, withRunnerBinaries(bin))
			if _, err := e.admin.KubernetesPut(ctx, api.KubernetesConfigRequest{Kubeconfig: string(kc), Namespace: ns, RunnerImage: mode.runnerImage}); err != nil {
				t.Fatal(err)
			}
			if _, err := e.admin.LimitPut(ctx, api.LimitPutRequest{Region: kubetest.ContextName, InstanceType: "m5.large", Max: 1}, false); err != nil {
				t.Fatal(err)
			}
			submitIndependentJobs(t, e.admin, e.codeID, 1)
			var pod *corev1.Pod
			waitFor(t, time.Minute, "the runner Pod scheduled", func() bool {
				list, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
				if err != nil || len(list.Items) == 0 || list.Items[0].Spec.NodeName == "" {
					return false
				}
				pod = &list.Items[0]
				return true
			})
			sec, err := c.Client.CoreV1().Secrets(ns).Get(ctx, pod.Name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			started := time.Now()
			id := runPodOnDocker(t, docker, pod, sec, image)
			var row api.Runner
			waitFor(t, 2*time.Minute, "the runner in the container registered", func() bool {
				rs, err := e.admin.RunnerList(ctx)
				if err != nil {
					return false
				}
				i := slices.IndexFunc(rs, func(r api.Runner) bool { return r.Name == pod.Name })
				if i < 0 {
					return false
				}
				row = rs[i]
				return true
			})
			t.Logf("container started → runner registered: %s", time.Since(started))
			if row.Backend != kubernetes.Name || row.Hostname != pod.Spec.NodeName || row.InstanceType != "m5.large" {
				t.Errorf("runners shows %+v", row)
			}
			waitFor(t, 2*time.Minute, "the job done", func() bool {
				runs, err := e.admin.RunList(ctx, true)
				return err == nil && len(runs) == 1 && runs[0].Status == api.StatusDone
			})
			t.Logf("container started → job done: %s", time.Since(started))
			if logs := containerLogs(t, docker, id); strings.Contains(logs, string(sec.Data[kubernetes.SecretKey])) {
				t.Errorf("the runner Pod's output shows its join token")
			}
		})
	}
}

// runPodOnDocker runs a Pod's one container as a kubelet would: its image
// (image when the Pod's cannot be had here), command and arguments, its
// environment resolved, its emptyDir volumes, its limits; on the host's
// network. The container is removed when the test ends.
func runPodOnDocker(t *testing.T, docker *client.Client, pod *corev1.Pod, sec *corev1.Secret, image string) string {
	t.Helper()
	ctx := context.Background()
	ctr := pod.Spec.Containers[0]
	var env []string
	for _, ev := range ctr.Env {
		v := ev.Value
		switch {
		case ev.ValueFrom != nil && ev.ValueFrom.SecretKeyRef != nil:
			if ev.ValueFrom.SecretKeyRef.Name != sec.Name {
				t.Fatalf("env %s from Secret %s, not the Pod's", ev.Name, ev.ValueFrom.SecretKeyRef.Name)
			}
			v = string(sec.Data[ev.ValueFrom.SecretKeyRef.Key])
		case ev.ValueFrom != nil && ev.ValueFrom.FieldRef != nil && ev.ValueFrom.FieldRef.FieldPath == "spec.nodeName":
			v = pod.Spec.NodeName
		case ev.ValueFrom != nil:
			t.Fatalf("env %s from %+v: not resolved by this test", ev.Name, ev.ValueFrom)
		}
		env = append(env, ev.Name+"="+v)
	}
	var mounts []mount.Mount
	for _, vm := range ctr.VolumeMounts {
		i := slices.IndexFunc(pod.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == vm.Name })
		if i < 0 || pod.Spec.Volumes[i].EmptyDir == nil {
			t.Fatalf("volume %s is not an emptyDir", vm.Name)
		}
		mounts = append(mounts, mount.Mount{Type: mount.TypeVolume, Target: vm.MountPath})
	}
	cpu, mem := ctr.Resources.Limits.Cpu(), ctr.Resources.Limits.Memory()
	res, err := docker.ContainerCreate(ctx, client.ContainerCreateOptions{
		Config: &container.Config{Image: image, Entrypoint: ctr.Command, Cmd: ctr.Args, Env: append(env, "PATH=/usr/local/bin:/bin", "HOME=/root")},
		HostConfig: &container.HostConfig{
			NetworkMode: "host", Mounts: mounts,
			Resources: container.Resources{NanoCPUs: cpu.MilliValue() * 1e6, Memory: mem.Value(), MemorySwap: mem.Value()},
		},
		NetworkingConfig: &network.NetworkingConfig{},
		Name:             "dstack-k8s-test-" + pod.Name,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the runner container's output:\n%s", containerLogs(t, docker, res.ID))
		}
		_, _ = docker.ContainerRemove(context.Background(), res.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
	})
	if _, err := docker.ContainerStart(ctx, res.ID, client.ContainerStartOptions{}); err != nil {
		t.Fatal(err)
	}
	return res.ID
}

func containerLogs(t *testing.T, docker *client.Client, id string) string {
	t.Helper()
	rc, err := docker.ContainerLogs(context.Background(), id, client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		return err.Error()
	}
	defer rc.Close()
	b, _ := io.ReadAll(rc)
	return string(b)
}
