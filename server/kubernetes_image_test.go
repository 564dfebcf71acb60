package server_test

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/backend/kubernetes"
	"github.com/dstackai/dstack/client"
	"github.com/dstackai/dstack/executor/executortest"
	"github.com/dstackai/dstack/internal/kubetest"
	"github.com/dstackai/dstack/internal/testutil"
	"github.com/dstackai/dstack/server"
)

// TestKubernetesJobImages runs docker jobs of two images on a real kubelet
// with containerd (skipped, saying why, where this host cannot run one):
// each image (FROM scratch: busybox and a file only it has, imported into
// the node's containerd, since nothing can be pulled here) gets a runner
// Pod of its own, made of it, with dstack-runner injected by the init
// container; each job prints its image's file, so it ran in its image and
// not in the other's. With a runner image, the init container copies the
// runner from it (`dstack-runner copy`); without one, the default image
// (a stand-in tagged python:3.12-slim: busybox's sh, wget and sha256sum)
// downloads it from the server and checks its SHA-256.
func TestKubernetesJobImages(t *testing.T) {
	for _, tc := range []struct {
		name        string
		runnerImage bool
	}{
		{"runner image", true},
		{"runner downloaded", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testKubernetesJobImages(t, tc.runnerImage)
		})
	}
}

func testKubernetesJobImages(t *testing.T, withRunnerImage bool) {
	c := kubetest.Start(t)
	node := c.AddKubeletNode(t, "img-1", map[string]string{kubetest.LabelInstanceType: "local.real"})
	c.Namespace(t, "dstack")
	dir := t.TempDir()
	busybox, err := executortest.Busybox(context.Background())
	if err != nil {
		t.Fatal(err)
	}

	// Two job images, each with a file only it has.
	images := map[string]string{"docker.io/team/alpha:1": "made of alpha", "docker.io/team/beta:1": "made of beta"}
	for ref, marker := range images {
		name := strings.NewReplacer("/", "_", ":", "_").Replace(ref)
		markerFile := filepath.Join(dir, name+".marker")
		if err := os.WriteFile(markerFile, []byte(marker+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		tarball := filepath.Join(dir, name+".tar")
		if err := kubetest.WriteImage(tarball, ref, map[string]string{"/bin/sh": busybox, "/bin/cat": busybox, "/etc/image-marker": markerFile},
			[]string{"/bin/sh"}); err != nil {
			t.Fatal(err)
		}
		node.ImportImage(t, tarball)
	}
	bin := buildRunner(t, dir)
	runnerImage := ""
	if withRunnerImage {
		// Nothing but the binary: the init container runs it to copy itself.
		runnerImage = "docker.io/dstack/runner:image-test"
		tarball := filepath.Join(dir, "runner.tar")
		if err := kubetest.WriteImage(tarball, runnerImage, map[string]string{"/dstack-runner": bin}, []string{"/dstack-runner"}); err != nil {
			t.Fatal(err)
		}
		node.ImportImage(t, tarball)
	} else {
		// The default image's stand-in: what the download script needs.
		files := map[string]string{}
		for _, b := range []string{"sh", "wget", "sha256sum", "cut", "mkdir", "dirname", "uname", "chmod", "sleep"} {
			files["/bin/"+b] = busybox
		}
		tarball := filepath.Join(dir, "python.tar")
		if err := kubetest.WriteImage(tarball, "docker.io/library/"+kubernetes.DefaultImage, files, []string{"/bin/sh"}); err != nil {
			t.Fatal(err)
		}
		node.ImportImage(t, tarball)
	}

	e := serveKubelet(t, c, runnerImage, func(cfg *server.Config) {
		cfg.IdleTimeout = 5 * time.Second
		cfg.RunnerBinaries = []string{bin} // what the download serves
	})
	ctx := context.Background()
	if _, err := e.admin.LimitPut(ctx, api.LimitPutRequest{Region: kubetest.ContextName, InstanceType: "local.real", Max: 2}, false); err != nil {
		t.Fatal(err)
	}
	for ref := range images {
		wf := strings.TrimSuffix(strings.TrimPrefix(ref, "docker.io/team/"), ":1")
		j := api.JobSpec{Workflow: wf, Provider: "docker", Image: ref, Commands: []string{"/bin/cat /etc/image-marker"}}
		if _, err := e.admin.RunSubmit(ctx, api.RunSubmitRequest{CodeID: e.codeID, Workflow: wf, Jobs: []api.JobSpec{j}}); err != nil {
			t.Fatal(err)
		}
	}
	submitted := time.Now()

	var pods []corev1.Pod
	testutil.EventuallyWithin(t, time.Minute, "a runner Pod for each image", func() bool {
		list, err := c.Client.CoreV1().Pods("dstack").List(ctx, metav1.ListOptions{})
		if err != nil || len(list.Items) < 2 {
			return false
		}
		pods = list.Items
		return true
	})
	t.Logf("pending jobs → runner Pods created: %s", time.Since(submitted))
	defer func() {
		if t.Failed() {
			for _, p := range pods {
				for _, ctr := range []string{kubernetes.InitContainer, "runner"} {
					logs, err := c.Client.CoreV1().Pods("dstack").GetLogs(p.Name, &corev1.PodLogOptions{Container: ctr}).DoRaw(context.Background())
					t.Logf("Pod %s container %s log (%v):\n%s", p.Name, ctr, err, logs)
				}
			}
		}
	}()
	got := map[string]bool{}
	for _, p := range pods {
		img := p.Spec.Containers[0].Image
		if _, ok := images[img]; !ok || len(p.Spec.InitContainers) != 1 {
			t.Errorf("Pod %s is of %q with init containers %+v, want one of the jobs' images, the runner injected", p.Name, img, p.Spec.InitContainers)
		}
		got[img] = true
	}
	if len(got) != 2 || len(pods) != 2 {
		t.Fatalf("%d Pods of images %v, want one of each", len(pods), got)
	}
	podAt := time.Now()
	var runs []api.Run
	testutil.EventuallyWithin(t, 3*time.Minute, "both jobs done", func() bool {
		runs, err = e.admin.RunList(ctx, true)
		if err != nil || len(runs) != 2 {
			return false
		}
		for _, r := range runs {
			if r.Status == api.StatusFailed {
				t.Fatalf("run %s failed: %+v", r.Name, r.Jobs)
			}
			if r.Status != api.StatusDone {
				return false
			}
		}
		return true
	})
	t.Logf("runner Pods created → both jobs done: %s", time.Since(podAt))
	for _, r := range runs {
		j := r.Jobs[0]
		body, err := e.admin.JobLogs(ctx, j.ID, client.LogOptions{})
		if err != nil {
			t.Fatal(err)
		}
		out, err := io.ReadAll(body)
		_ = body.Close()
		if err != nil {
			t.Fatal(err)
		}
		want := images["docker.io/team/"+j.Workflow+":1"]
		if !strings.Contains(string(out), want) {
			t.Errorf("job %s (%s) printed %q, want %q: it did not run in its image", j.ID, j.Workflow, out, want)
		}
	}
	testutil.EventuallyWithin(t, 2*time.Minute, "the idle runner Pods deleted", func() bool {
		list, err := c.Client.CoreV1().Pods("dstack").List(ctx, metav1.ListOptions{})
		return err == nil && len(list.Items) == 0
	})
}
