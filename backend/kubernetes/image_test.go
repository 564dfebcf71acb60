package kubernetes

import (
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/dstackai/dstack/backend"
)

// TestLaunchPodOfJobImage: a launch with a job's image makes a Pod of that
// image whose init container puts dstack-runner in the emptyDir at
// /dstack (copied from the runner image, or downloaded from the server by
// the default image), and whose main container runs it from there with
// the shell executor, its join token from the Pod's Secret; the Pod is
// pinned to its type as any runner Pod. A launch without an image makes
// the Pod as before, without an init container.
func TestLaunchPodOfJobImage(t *testing.T) {
	t.Parallel()
	c := cluster(t)
	const jobImage = "registry.example/team/train:1.2"
	for _, tc := range []struct {
		name        string
		runnerImage string
		offer       backend.Offer
	}{
		{name: "from the runner image", runnerImage: "registry.example/dstack-runner:0.1", offer: offerOf(typeStd, true)},
		{name: "downloaded from the server", offer: offerOf(typeGPU, false)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ns := namespace(t, c)
			b := newBackend(t, c, ns, func(cfg *Config) { cfg.RunnerImage = tc.runnerImage })
			if offers, err := b.Offers(ctxT(t), "kubetest"); err != nil || len(offers) == 0 || !offers[0].PerImage {
				t.Fatalf("Offers = %+v, %v; want offers that are PerImage", offers, err)
			}
			server := "srv-" + randomHex(4)
			req := request(server, tc.offer, 1)
			req.Image = jobImage
			got, err := b.Launch(ctxT(t), req)
			if err != nil || len(got) != 1 {
				t.Fatalf("Launch = %+v, %v", got, err)
			}
			pod, err := c.Client.CoreV1().Pods(ns).Get(ctxT(t), got[0].CloudID, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if pod.Annotations[keyImage] != jobImage {
				t.Errorf("annotation %s = %q, want %q", keyImage, pod.Annotations[keyImage], jobImage)
			}
			if len(pod.Spec.Volumes) != 1 || pod.Spec.Volumes[0].Name != podVolume || pod.Spec.Volumes[0].EmptyDir == nil {
				t.Errorf("volumes %+v, want the emptyDir %s", pod.Spec.Volumes, podVolume)
			}
			mounted := func(ctr corev1.Container) bool {
				return slices.ContainsFunc(ctr.VolumeMounts, func(m corev1.VolumeMount) bool {
					return m.Name == podVolume && m.MountPath == "/dstack" && !m.ReadOnly
				})
			}

			if len(pod.Spec.InitContainers) != 1 {
				t.Fatalf("init containers %+v, want one", pod.Spec.InitContainers)
			}
			init := pod.Spec.InitContainers[0]
			if init.Name != InitContainer || !mounted(init) {
				t.Errorf("init container %s mounts %+v", init.Name, init.VolumeMounts)
			}
			if tc.runnerImage != "" {
				if init.Image != tc.runnerImage || !slices.Equal(init.Command, []string{"dstack-runner", "copy", "/dstack/bin/dstack-runner"}) {
					t.Errorf("init container runs %q %q, want the runner image copying dstack-runner to /dstack/bin", init.Image, init.Command)
				}
			} else {
				script := strings.Join(init.Command, " ")
				if init.Image != DefaultImage || !strings.HasPrefix(script, "/bin/sh -c ") ||
					!strings.Contains(script, "/runner/download/linux/$arch/dstack-runner") || !strings.Contains(script, "sha256sum") ||
					!strings.Contains(script, "bin=/dstack/bin/dstack-runner") || strings.Contains(script, "exec ") {
					t.Errorf("init container runs %q %q, want the default image downloading and checking dstack-runner, not starting it", init.Image, init.Command)
				}
				if !slices.Contains(init.Env, corev1.EnvVar{Name: "DSTACK_SERVER", Value: req.ServerURL}) {
					t.Errorf("init container env %+v lacks DSTACK_SERVER", init.Env)
				}
			}
			for _, e := range init.Env {
				if e.Name == "DSTACK_JOIN_TOKEN" || e.ValueFrom != nil {
					t.Errorf("the init container gets %s: only the runner needs the token", e.Name)
				}
			}
			if _, ok := init.Resources.Requests[ResourceGPU]; ok {
				t.Errorf("the init container asks for GPUs: %v", init.Resources.Requests)
			}

			ctr := pod.Spec.Containers[0]
			if ctr.Image != jobImage {
				t.Errorf("main container image %q, want the job's %q", ctr.Image, jobImage)
			}
			wantCmd := []string{"/dstack/bin/dstack-runner", "start", "--executor", "shell", "--server", req.ServerURL,
				"--name", pod.Name, "--data-dir", "/dstack/data", "--work-dir", "/dstack/work"}
			if !slices.Equal(ctr.Command, wantCmd) || len(ctr.Args) != 0 {
				t.Errorf("main container command %q args %q, want %q", ctr.Command, ctr.Args, wantCmd)
			}
			if !mounted(ctr) {
				t.Errorf("main container mounts %+v", ctr.VolumeMounts)
			}
			var tokenRef *corev1.SecretKeySelector
			var nodeName bool
			for _, e := range ctr.Env {
				switch {
				case e.Name == "DSTACK_JOIN_TOKEN" && e.Value == "" && e.ValueFrom != nil:
					tokenRef = e.ValueFrom.SecretKeyRef
				case e.Name == "DSTACK_NODE_NAME" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil:
					nodeName = e.ValueFrom.FieldRef.FieldPath == "spec.nodeName"
				}
			}
			if tokenRef == nil || tokenRef.Name != pod.Name || tokenRef.Key != SecretKey || !nodeName {
				t.Fatalf("main container env %+v: want the join token from the Pod's Secret and the node name", ctr.Env)
			}
			sec, err := c.Client.CoreV1().Secrets(ns).Get(ctxT(t), tokenRef.Name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if string(sec.Data[SecretKey]) != req.Instances[0].JoinToken || len(sec.OwnerReferences) != 1 || sec.OwnerReferences[0].UID != pod.UID {
				t.Errorf("the Secret holds %q, owned by %+v", sec.Data[SecretKey], sec.OwnerReferences)
			}
			for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
				if i, m := init.Resources.Limits[name], ctr.Resources.Limits[name]; i.Cmp(m) != 0 || i.IsZero() {
					t.Errorf("%s: init container %s, main %s; want the same", name, i.String(), m.String())
				}
			}
			if tc.offer.InstanceType == typeGPU {
				if q := ctr.Resources.Limits[ResourceGPU]; q.Value() != 1 {
					t.Errorf("the main container's GPUs %s, want 1", q.String())
				}
			}
			terms := pod.Spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms
			if len(terms) == 0 || !slices.Equal(terms[0].MatchExpressions[0].Values, []string{tc.offer.InstanceType}) ||
				terms[0].MatchExpressions[0].Key != LabelInstanceType {
				t.Errorf("node affinity %+v, want %s In [%s]", terms, LabelInstanceType, tc.offer.InstanceType)
			}
			if pod.Labels[keyServerID] != server || pod.Labels[keyRecordID] != req.Instances[0].RecordID {
				t.Errorf("labels %v", pod.Labels)
			}
			poll(t, 30*time.Second, "the Pod scheduled and running", func() bool {
				ins, err := b.List(ctxT(t), server)
				return err == nil && len(ins) == 1 && ins[0].State == backend.StateRunning && ins[0].Host != ""
			})

			// Without an image: the runner Pod of before.
			plain := request(server, tc.offer, 1)
			got, err = b.Launch(ctxT(t), plain)
			if err != nil || len(got) != 1 {
				t.Fatalf("Launch without an image = %+v, %v", got, err)
			}
			pod, err = c.Client.CoreV1().Pods(ns).Get(ctxT(t), got[0].CloudID, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			wantImage := tc.runnerImage
			if wantImage == "" {
				wantImage = DefaultImage
			}
			if len(pod.Spec.InitContainers) != 0 || pod.Spec.Containers[0].Image != wantImage || pod.Annotations[keyImage] != "" {
				t.Errorf("a Pod without a job image has init containers %+v and image %q; want none and %q",
					pod.Spec.InitContainers, pod.Spec.Containers[0].Image, wantImage)
			}
		})
	}
}
