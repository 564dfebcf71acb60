package plan

import (
	"strings"
	"testing"
	"time"

	"github.com/dstackai/dstack/backend"
)

// TestImages covers the image binding of offers that are PerImage (a
// Kubernetes runner Pod is made of its job's image): launches carry the
// job's image, an instance bound to an image takes only jobs of it, and an
// idle instance of another image makes room in a full limit. Offers that
// are not PerImage plan as before.
func TestImages(t *testing.T) {
	t.Parallel()
	pod := m5xlarge
	pod.Backend, pod.PerImage = "kubernetes", true
	var (
		pods = limitOf("l-pods", "u1", pod, 2)
		one  = limitOf("l-one", "u1", pod, 1)
		vms  = limitOf("l-vms", "u1", m5large, 2)
		imgA = "registry/a:1"
		imgB = "registry/b:1"
	)
	withImage := func(j Job, image string) Job { j.Image = image; return j }
	bound := func(in Instance, image string) Instance { in.ImageBound, in.Image = true, image; return in }
	launchOf := func(l Limit, image string, jobIDs ...string) Launch {
		ln := launch(l, pod, jobIDs...)
		ln.Image = image
		return ln
	}
	tests := []struct {
		name string
		s    Snapshot
		want Decision
	}{
		{
			name: "jobs of two images are two launches of the limit",
			s: Snapshot{
				Limits: []Limit{pods},
				Jobs:   []Job{withImage(job("j1", "u1", 1, cpus(1)), imgB), withImage(job("j2", "u1", 2, cpus(1)), imgA)},
			},
			want: Decision{Launches: []Launch{launchOf(pods, imgA, "j2"), launchOf(pods, imgB, "j1")}},
		},
		{
			name: "jobs of one image are one launch, a job with none another",
			s: Snapshot{
				Limits: []Limit{limitOf("l-pods", "u1", pod, 3)},
				Jobs: []Job{withImage(job("j1", "u1", 1, cpus(1)), imgA), job("j2", "u1", 2, cpus(1)),
					withImage(job("j3", "u1", 3, cpus(1)), imgA)},
			},
			want: Decision{Launches: []Launch{launchOf(pods, "", "j2"), launchOf(pods, imgA, "j1", "j3")}},
		},
		{
			name: "an offer not per image launches without one",
			s: Snapshot{
				Limits: []Limit{vms},
				Jobs:   []Job{withImage(job("j1", "u1", 1, cpus(1)), imgB), withImage(job("j2", "u1", 2, cpus(1)), imgA)},
			},
			want: Decision{Launches: []Launch{launch(vms, m5large, "j1", "j2")}},
		},
		{
			name: "an idle instance takes a job of its image only",
			s: Snapshot{
				Limits:    []Limit{pods},
				Instances: []Instance{bound(idle("i-a", pods, pod, time.Minute), imgA)},
				Jobs:      []Job{withImage(job("j1", "u1", 1, cpus(1)), imgB), withImage(job("j2", "u1", 2, cpus(1)), imgA)},
			},
			want: Decision{
				Bindings: []Binding{onInstance("j2", "i-a")},
				Launches: []Launch{launchOf(pods, imgB, "j1")},
			},
		},
		{
			name: "an instance bound to no image takes only jobs with none",
			s: Snapshot{
				Limits:    []Limit{pods},
				Instances: []Instance{bound(launching("i-none", pods, pod, "", time.Second), "")},
				Jobs:      []Job{withImage(job("j1", "u1", 1, cpus(1)), imgA), job("j2", "u1", 2, cpus(1))},
			},
			want: Decision{
				Bindings: []Binding{onInstance("j2", "i-none")},
				Launches: []Launch{launchOf(pods, imgA, "j1")},
			},
		},
		{
			name: "an unbound instance takes a job of any image",
			s: Snapshot{
				Limits:    []Limit{vms},
				Instances: []Instance{idle("i-vm", vms, m5large, time.Minute)},
				Jobs:      []Job{withImage(job("j1", "u1", 1, cpus(1)), imgA)},
			},
			want: Decision{Bindings: []Binding{onInstance("j1", "i-vm")}},
		},
		{
			name: "an idle instance of another image in a full limit makes room",
			s: Snapshot{
				Limits:    []Limit{one},
				Instances: []Instance{bound(idle("i-a", one, pod, time.Minute), imgA)},
				Jobs:      []Job{withImage(job("j1", "u1", 1, cpus(1)), imgB)},
			},
			want: Decision{
				Terminations: []Termination{{InstanceID: "i-a", LimitID: one.ID, Reason: ReasonImage}},
				Waiting: []Waiting{{JobID: "j1", Code: WaitNoRoom,
					Message: "the limit that allows an on-demand instance with 1 CPU (m5.xlarge on-demand) is at its maximum of 1; its idle instance i-a of image registry/a:1 goes to make room for this job's"}},
			},
		},
		{
			name: "an instance a job of its image takes is not replaced",
			s: Snapshot{
				Limits:    []Limit{one},
				Instances: []Instance{bound(idle("i-a", one, pod, time.Minute), imgA)},
				Jobs:      []Job{withImage(job("j1", "u1", 1, cpus(1)), imgB), withImage(job("j2", "u1", 2, cpus(1)), imgA)},
			},
			want: Decision{
				Bindings: []Binding{onInstance("j2", "i-a")},
				Waiting:  []Waiting{{JobID: "j1", Code: WaitNoRoom}},
			},
		},
		{
			name: "a busy instance of another image is not replaced",
			s: Snapshot{
				Limits:    []Limit{one},
				Instances: []Instance{bound(busy("i-a", one, pod, "running-1", time.Minute), imgA)},
				Jobs:      []Job{withImage(job("j1", "u1", 1, cpus(1)), imgB)},
			},
			want: Decision{Waiting: []Waiting{{JobID: "j1", Code: WaitNoRoom}}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.s.Now = t0
			tc.s.Offers = []backend.Offer{pod, m5large}
			d := Plan(tc.s)
			if errs := check(tc.s, d); len(errs) > 0 {
				t.Errorf("the decision breaks the rules:\n%s", strings.Join(errs, "\n"))
			}
			checkDecision(t, d, tc.want)
		})
	}
}
