package autoscale_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/store"
)

// submitImage queues a run of one docker job of image and returns the
// job's ID.
func (e *env) submitImage(image string) string {
	e.t.Helper()
	n := e.seq.Add(1)
	id := fmt.Sprint("job-", n)
	_, err := e.st.RunCreate(e.ctx, store.RunCreateParams{
		ID: fmt.Sprint("run-", n), Name: fmt.Sprint("run-", n), UserID: e.user.ID, Workflow: "w", CodeID: "c", Now: e.clock.Now(),
		Jobs: []store.JobCreate{{ID: id, Spec: api.JobSpec{Workflow: "w", Provider: "docker", Image: image, Commands: []string{"true"}, Resources: small}}},
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return id
}

// TestKubernetesJobImages: on the Kubernetes backend, whose offers are per
// image, two pending docker jobs of two images get two runner Pods, each of
// its job's image and recorded bound to it; each runner claims only the job
// of its image. When the limit is full of idle Pods of other images, a job
// of a third image has the longest idle one deleted to make room, and gets
// its Pod on the next pass.
func TestKubernetesJobImages(t *testing.T) {
	t.Parallel()
	k := setupKube(t, kubeCluster(t), nil)
	k.limit(kubeStd, 2)
	const imgA, imgB, imgC = "registry.example/a:1", "registry.example/b:1", "registry.example/c:1"
	jobA, jobB := k.submitImage(imgA), k.submitImage(imgB)
	k.step()
	k.checkKube()
	ins := k.instances(store.InstanceLaunching)
	if len(ins) != 2 {
		t.Fatalf("launching = %+v, want one instance per image", ins)
	}
	runners := map[string]*store.Runner{} // by image
	for _, in := range ins {
		if !in.ImageBound || (in.Image != imgA && in.Image != imgB) {
			t.Fatalf("instance %s bound %v to %q, want bound to one of the images", in.ID, in.ImageBound, in.Image)
		}
		if runners[in.Image] != nil {
			t.Fatalf("two instances of image %s", in.Image)
		}
		runners[in.Image] = k.join(in)
	}
	images := map[string]string{}
	for _, p := range k.pods() {
		images[p.Name] = p.Spec.Containers[0].Image
		if len(p.Spec.InitContainers) != 1 {
			t.Errorf("Pod %s has init containers %+v, want the runner's", p.Name, p.Spec.InitContainers)
		}
	}
	for _, in := range ins {
		if images[in.CloudID] != in.Image {
			t.Errorf("Pod %s is of image %q, its record says %q", in.CloudID, images[in.CloudID], in.Image)
		}
	}
	// B's runner first: it must not take A's job, queued first.
	jb := k.claim(runners[imgB])
	if jb == nil || jb.ID != jobB {
		t.Fatalf("the runner of %s claimed %+v, want %s", imgB, jb, jobB)
	}
	ja := k.claim(runners[imgA])
	if ja == nil || ja.ID != jobA {
		t.Fatalf("the runner of %s claimed %+v, want %s", imgA, ja, jobA)
	}
	k.finish(ja, runners[imgA])
	k.step() // A idle
	k.clock.Advance(time.Second)
	k.finish(jb, runners[imgB])
	k.step() // B idle too

	jobC := k.submitImage(imgC)
	k.step()
	k.checkKube()
	var replaced *store.Instance
	for _, in := range k.instances(store.InstanceTerminated) {
		if in.Reason == "image_replaced" {
			replaced = in
		}
	}
	if replaced == nil || replaced.Image != imgA {
		t.Fatalf("replaced %+v, want the idle instance of %s", replaced, imgA)
	}
	if j := k.job(jobC); j.Status != api.StatusPending || j.StatusReason == "" {
		t.Errorf("job of %s is %s (%q), want pending with the reason", imgC, j.Status, j.StatusReason)
	}
	k.step()
	k.checkKube()
	var forC []*store.Instance
	for _, in := range k.instances(store.InstanceLaunching) {
		if in.Image == imgC && in.JobID == jobC {
			forC = append(forC, in)
		}
	}
	if len(forC) != 1 {
		t.Fatalf("launching for %s: %+v, want one instance", imgC, k.instances(store.InstanceLaunching))
	}
	if !slices.ContainsFunc(k.pods(), func(p corev1.Pod) bool { return p.Spec.Containers[0].Image == imgC && p.DeletionTimestamp == nil }) {
		t.Errorf("no runner Pod of %s", imgC)
	}
}
