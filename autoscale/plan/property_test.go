package plan

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/backend"
)

// TestProperties plans thousands of random snapshots and checks each
// Decision against the product's rules, with a checker written apart from
// the planner.
func TestProperties(t *testing.T) {
	t.Parallel()
	n := 5000
	if testing.Short() {
		n = 500
	}
	for seed := range uint64(n) {
		rng := rand.New(rand.NewPCG(seed, 0x5eed))
		s := randomSnapshot(rng)
		before := dump(s)
		d := Plan(s)
		if after := dump(s); after != before {
			t.Fatalf("seed %d: Plan changed its snapshot:\n%s\n%s", seed, before, after)
		}
		if errs := check(s, d); len(errs) > 0 {
			t.Fatalf("seed %d: %s\nsnapshot: %s\ndecision: %s", seed, strings.Join(errs, "\n"), dump(s), show(d))
		}
		shuffled := shuffle(rng, s)
		if d2 := Plan(shuffled); !reflect.DeepEqual(d, d2) {
			t.Fatalf("seed %d: the same snapshot in another order plans differently:\n%s\n%s", seed, show(d), show(d2))
		}
	}
}

var gpuKinds = []api.GPU{a100, v100, t4}

// images are the jobs' images of random snapshots: none, and two.
var images = []string{"", "registry/a:1", "registry/b:1"}

func randomSnapshot(rng *rand.Rand) Snapshot {
	s := Snapshot{Now: t0, Unavailable: map[backend.OfferKey]time.Time{}}
	if rng.IntN(3) == 0 {
		s.IdleTimeout = time.Duration(1+rng.IntN(10)) * time.Minute
	}
	users := []string{"u1", "u2", "u3"}[:1+rng.IntN(3)]
	user := func() string { return users[rng.IntN(len(users))] }

	// Offers: instance types of random sizes, each on-demand and spot.
	var keys []backend.OfferKey
	for i := range 1 + rng.IntN(8) {
		o := backend.Offer{Backend: "aws", Region: region, InstanceType: fmt.Sprintf("t%d", i),
			CPUs: 1 << rng.IntN(6), MemoryMiB: int64(1<<rng.IntN(7)) << 10, PricePerHour: float64(1 + rng.IntN(20))}
		if rng.IntN(2) == 0 {
			g := gpuKinds[rng.IntN(len(gpuKinds))]
			for range 1 + rng.IntN(4) {
				o.GPUs = append(o.GPUs, g)
			}
		}
		o.PerImage = rng.IntN(3) == 0
		sp := o
		sp.Spot = true
		sp.PricePerHour = float64(1 + rng.IntN(20))
		for _, x := range []backend.Offer{o, sp} {
			keys = append(keys, x.Key())
			if rng.IntN(10) > 0 { // sometimes no backend sells it
				s.Offers = append(s.Offers, x)
			}
			if rng.IntN(6) == 0 {
				s.Unavailable[x.Key()] = t0.Add(time.Duration(rng.IntN(5)-2) * time.Minute)
			}
		}
	}

	for i := range rng.IntN(9) {
		k := keys[rng.IntN(len(keys))]
		s.Limits = append(s.Limits, Limit{ID: fmt.Sprintf("l%d", i), UserID: user(), Backend: k.Backend, Region: k.Region,
			InstanceType: k.InstanceType, Spot: k.Spot, Max: rng.IntN(5) - rng.IntN(2), Enabled: rng.IntN(8) > 0})
	}

	for i := range rng.IntN(25) {
		r := api.Resources{Interruptible: rng.IntN(2) == 0}
		if rng.IntN(2) == 0 {
			r.CPU = rng.IntN(20)
		}
		if rng.IntN(2) == 0 {
			r.MemoryMiB = int64(rng.IntN(40)) << 10
		}
		if rng.IntN(3) == 0 {
			r.GPU = &api.GPURequest{Count: rng.IntN(4), Name: []string{"", "a100", "V100", "t4", "h100"}[rng.IntN(5)]}
			if rng.IntN(2) == 0 {
				r.GPU.MemoryMiB = int64(rng.IntN(48)) << 10
			}
		}
		s.Jobs = append(s.Jobs, Job{ID: fmt.Sprintf("j%02d", i), UserID: user(), Resources: r,
			QueuedAt: t0.Add(-time.Duration(rng.IntN(5)) * time.Second), Image: images[rng.IntN(len(images))]})
	}

	for i := range rng.IntN(4) {
		h := api.HostResources{CPUs: rng.IntN(16), MemoryMiB: int64(rng.IntN(64)) << 10}
		if rng.IntN(3) == 0 {
			h.GPUs = []api.GPU{gpuKinds[rng.IntN(len(gpuKinds))]}
		}
		s.Runners = append(s.Runners, Runner{ID: fmt.Sprintf("r%d", i), UserID: user(), Free: h, Shared: rng.IntN(4) == 0})
	}

	states := []InstanceState{InstanceLaunching, InstanceRunning, InstanceRunning, InstanceTerminating}
	for i := range rng.IntN(15) {
		in := Instance{ID: fmt.Sprintf("i%02d", i), State: states[rng.IntN(len(states))],
			StartedAt: t0.Add(-time.Duration(rng.IntN(600)) * time.Second)}
		if len(s.Limits) == 0 || rng.IntN(10) == 0 {
			in.LimitID = "deleted"
			in.Offer = backend.Offer{Backend: "aws", Region: region, InstanceType: "gone", CPUs: 4, MemoryMiB: 16 << 10}
		} else {
			l := s.Limits[rng.IntN(len(s.Limits))]
			in.LimitID = l.ID
			in.Offer = offerOf(s.Offers, l.OfferKey())
		}
		switch rng.IntN(4) {
		case 0: // idle, or launching for no job
		case 1:
			if len(s.Jobs) > 0 {
				in.JobID = s.Jobs[rng.IntN(len(s.Jobs))].ID
			}
		default:
			in.JobID = fmt.Sprintf("running-%d", i)
		}
		if rng.IntN(2) == 0 {
			in.IdleSince = t0.Add(-time.Duration(rng.IntN(600)) * time.Second)
		}
		if in.Offer.PerImage {
			in.ImageBound, in.Image = true, images[rng.IntN(len(images))]
		}
		s.Instances = append(s.Instances, in)
	}
	return s
}

// offerOf is the offer of key k, or a made-up one where none is sold.
func offerOf(offers []backend.Offer, k backend.OfferKey) backend.Offer {
	for _, o := range offers {
		if o.Key() == k {
			return o
		}
	}
	return backend.Offer{Backend: k.Backend, Region: k.Region, InstanceType: k.InstanceType, Spot: k.Spot, CPUs: 2, MemoryMiB: 4 << 10}
}

// dump renders a snapshot for a failure message.
func dump(s Snapshot) string {
	var b strings.Builder
	fmt.Fprintf(&b, "now %s, idle timeout %s\n", s.Now.Format(time.TimeOnly), s.IdleTimeout)
	for _, x := range s.Offers {
		fmt.Fprintf(&b, "  offer %+v\n", x)
	}
	var unavailable []string
	for k, u := range s.Unavailable {
		unavailable = append(unavailable, fmt.Sprintf("  unavailable %s until %s\n", k, u.Format(time.TimeOnly)))
	}
	slices.Sort(unavailable)
	b.WriteString(strings.Join(unavailable, ""))
	for _, x := range s.Limits {
		fmt.Fprintf(&b, "  limit %+v\n", x)
	}
	for _, x := range s.Instances {
		fmt.Fprintf(&b, "  instance %s limit %s %s job %q idle since %s started %s bound %v image %q offer %+v\n", x.ID, x.LimitID, x.State, x.JobID,
			x.IdleSince.Format(time.TimeOnly), x.StartedAt.Format(time.TimeOnly), x.ImageBound, x.Image, x.Offer)
	}
	for _, x := range s.Runners {
		fmt.Fprintf(&b, "  runner %+v\n", x)
	}
	for _, x := range s.Jobs {
		g := ""
		if x.Resources.GPU != nil {
			g = fmt.Sprintf(" gpu %+v", *x.Resources.GPU)
		}
		fmt.Fprintf(&b, "  job %s user %s queued %s image %q %+v%s\n", x.ID, x.UserID, x.QueuedAt.Format(time.TimeOnly), x.Image, x.Resources, g)
	}
	return b.String()
}

func shuffle(rng *rand.Rand, s Snapshot) Snapshot {
	s.Jobs, s.Runners, s.Instances = slices.Clone(s.Jobs), slices.Clone(s.Runners), slices.Clone(s.Instances)
	s.Limits, s.Offers = slices.Clone(s.Limits), slices.Clone(s.Offers)
	rng.Shuffle(len(s.Jobs), func(i, j int) { s.Jobs[i], s.Jobs[j] = s.Jobs[j], s.Jobs[i] })
	rng.Shuffle(len(s.Runners), func(i, j int) { s.Runners[i], s.Runners[j] = s.Runners[j], s.Runners[i] })
	rng.Shuffle(len(s.Instances), func(i, j int) { s.Instances[i], s.Instances[j] = s.Instances[j], s.Instances[i] })
	rng.Shuffle(len(s.Limits), func(i, j int) { s.Limits[i], s.Limits[j] = s.Limits[j], s.Limits[i] })
	rng.Shuffle(len(s.Offers), func(i, j int) { s.Offers[i], s.Offers[j] = s.Offers[j], s.Offers[i] })
	return s
}
