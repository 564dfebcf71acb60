package plan

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/backend"
)

// BenchmarkPlan plans 10,000 pending jobs of 20 users against 200 limits,
// 480 offers, 2,000 instances and 100 free runners. "shared-shapes" draws the
// jobs' resources from a few dozen common requests, as real queues do;
// "distinct-shapes" gives every job its own, the planner's worst case.
func BenchmarkPlan(b *testing.B) {
	for _, distinct := range []bool{false, true} {
		name := "shared-shapes"
		if distinct {
			name = "distinct-shapes"
		}
		b.Run(name, func(b *testing.B) {
			s := benchSnapshot(rand.New(rand.NewPCG(1, 2)), 10_000, 200, distinct)
			b.ReportAllocs()
			var d Decision
			for b.Loop() {
				d = Plan(s)
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/op")
			launched := 0
			for _, l := range d.Launches {
				launched += l.Count
			}
			b.ReportMetric(float64(launched), "launched")
			b.ReportMetric(float64(len(d.Bindings)), "bound")
			b.ReportMetric(float64(len(d.Waiting)), "waiting")
		})
	}
}

func benchSnapshot(rng *rand.Rand, jobs, limits int, distinct bool) Snapshot {
	s := Snapshot{Now: t0, Unavailable: map[backend.OfferKey]time.Time{}}
	// 60 instance types in 2 regions, each on-demand and spot.
	gpuNames := []api.GPU{a100, v100, t4}
	for _, reg := range []string{"eu-west-1", "us-east-1"} {
		for i := range 60 {
			o := backend.Offer{Backend: "aws", Region: reg, InstanceType: fmt.Sprintf("type%02d", i),
				CPUs: 2 << (i % 6), MemoryMiB: int64(8<<(i%6)) << 10, PricePerHour: 0.1 * float64(1+i)}
			if i%3 == 0 {
				for range 1 << (i % 4) {
					o.GPUs = append(o.GPUs, gpuNames[i%len(gpuNames)])
				}
				o.PricePerHour *= 10
			}
			sp := o
			sp.Spot, sp.PricePerHour = true, o.PricePerHour/3
			s.Offers = append(s.Offers, o, sp)
		}
	}
	for i, o := range s.Offers {
		if i%40 == 0 {
			s.Unavailable[o.Key()] = t0.Add(time.Minute)
		}
	}
	users := 20
	for i := range limits {
		o := s.Offers[rng.IntN(len(s.Offers))]
		s.Limits = append(s.Limits, Limit{ID: fmt.Sprintf("limit%03d", i), UserID: fmt.Sprintf("user%02d", i%users),
			Backend: o.Backend, Region: o.Region, InstanceType: o.InstanceType, Spot: o.Spot, Max: 10 + rng.IntN(90), Enabled: i%25 != 0})
	}
	states := []InstanceState{InstanceLaunching, InstanceRunning, InstanceRunning, InstanceRunning, InstanceTerminating}
	for i := range 2000 {
		l := s.Limits[rng.IntN(len(s.Limits))]
		in := Instance{ID: fmt.Sprintf("inst%05d", i), LimitID: l.ID, Offer: offerOf(s.Offers, l.OfferKey()),
			State: states[rng.IntN(len(states))], StartedAt: t0.Add(-time.Duration(rng.IntN(3600)) * time.Second)}
		if rng.IntN(3) > 0 {
			in.JobID = fmt.Sprintf("running%05d", i)
		} else {
			in.IdleSince = t0.Add(-time.Duration(rng.IntN(600)) * time.Second)
		}
		s.Instances = append(s.Instances, in)
	}
	for i := range 100 {
		s.Runners = append(s.Runners, Runner{ID: fmt.Sprintf("runner%03d", i), UserID: fmt.Sprintf("user%02d", i%users),
			Free: api.HostResources{CPUs: 4 << (i % 4), MemoryMiB: int64(16<<(i%4)) << 10}})
	}
	var common []api.Resources
	for i := range 40 {
		r := api.Resources{CPU: 1 << (i % 5), MemoryMiB: int64(2<<(i%6)) << 10, Interruptible: i%2 == 0}
		if i%4 == 0 {
			r.GPU = &api.GPURequest{Count: 1 << (i % 3), Name: []string{"", "A100", "v100", "T4"}[i%4/1%4]}
		}
		common = append(common, r)
	}
	for i := range jobs {
		r := common[rng.IntN(len(common))]
		if distinct {
			r.CPU, r.MemoryMiB = 1+rng.IntN(64), int64(1+rng.IntN(256<<10))
		}
		s.Jobs = append(s.Jobs, Job{ID: fmt.Sprintf("job%05d", i), UserID: fmt.Sprintf("user%02d", rng.IntN(users)),
			Resources: r, QueuedAt: t0.Add(-time.Duration(rng.IntN(3600)) * time.Second)})
	}
	return s
}
