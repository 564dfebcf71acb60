package storetest

import (
	"testing"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/store"
)

// imageSpec is a docker job spec of workflow running in image.
func imageSpec(workflow, image string) api.JobSpec {
	return api.JobSpec{Workflow: workflow, Provider: "docker", Image: image, Commands: []string{"echo " + workflow}}
}

// boundRunner records an instance of l bound to image (unbound when bound
// is false) and registers its runner.
func (f *fixture) boundRunner(l *store.Limit, bound bool, image string) (*store.Instance, *store.Runner) {
	f.t.Helper()
	p := f.instanceParams(l, 1)
	p.ImageBound, p.Image = bound, image
	ins, err := f.s.InstanceCreate(f.ctx, p)
	if err != nil {
		f.t.Fatalf("InstanceCreate: %v", err)
	}
	return f.register(ins[0])
}

var imageTests = []test{
	{"a runner bound to an image claims only jobs of that image", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		l := f.limit(u, 5)
		bash := f.run(u, spec("bash")).Jobs[0]
		other := f.run(u, imageSpec("other", "registry/b:1")).Jobs[0]
		python := f.run(u, api.JobSpec{Workflow: "py", Provider: "python", Image: "python:3.12", Commands: []string{"python3 x.py"}}).Jobs[0]
		mine := f.run(u, imageSpec("mine", "registry/a:1")).Jobs[0]

		pending, err := f.s.JobListPending(f.ctx, store.JobListPendingParams{})
		if err != nil {
			t.Fatal(err)
		}
		images := map[string]string{}
		for _, j := range pending {
			images[j.ID] = j.Image
		}
		for id, want := range map[string]string{bash.ID: "", other.ID: "registry/b:1", python.ID: "python:3.12", mine.ID: "registry/a:1"} {
			if images[id] != want {
				t.Errorf("JobListPending: job %s has image %q, want %q", id, images[id], want)
			}
		}

		in, a := f.boundRunner(l, true, "registry/a:1")
		if got := f.instance(in.ID); !got.ImageBound || got.Image != "registry/a:1" {
			t.Errorf("instance bound = %v, image %q; want bound to registry/a:1", got.ImageBound, got.Image)
		}
		got := f.claim(a)
		if got.ID != mine.ID {
			t.Fatalf("the runner bound to registry/a:1 claimed %s (%s), want %s", got.ID, got.Spec.Image, mine.ID)
		}
		f.finish(got, api.StatusDone)
		f.noClaim(a) // neither registry/b:1, python:3.12 nor the bash job

		_, none := f.boundRunner(l, true, "")
		if got := f.claim(none); got.ID != bash.ID {
			t.Fatalf("the runner bound to no image claimed %s, want the bash job %s", got.ID, bash.ID)
		}
		_, py := f.boundRunner(l, true, "python:3.12")
		if got := f.claim(py); got.ID != python.ID {
			t.Fatalf("the runner bound to python:3.12 claimed %s, want the python job %s", got.ID, python.ID)
		}
		_, any := f.boundRunner(l, false, "")
		if got := f.claim(any); got.ID != other.ID {
			t.Fatalf("the unbound runner claimed %s, want %s", got.ID, other.ID)
		}
	}},
	{"a bound runner finds its image behind more jobs than a batch reads", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		l := f.limit(u, 1)
		var specs []api.JobSpec
		for i := range 70 {
			specs = append(specs, imageSpec("b"+string(rune('a'+i/26))+string(rune('a'+i%26)), "registry/b:1"))
		}
		f.run(u, specs...)
		mine := f.run(u, imageSpec("mine", "registry/a:1")).Jobs[0]
		_, a := f.boundRunner(l, true, "registry/a:1")
		if got := f.claim(a); got.ID != mine.ID {
			t.Fatalf("claimed %s (%s), want %s of registry/a:1", got.ID, got.Spec.Image, mine.ID)
		}
		f.noClaim(a)
	}},
}
