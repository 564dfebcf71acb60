package plan

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/backend"
)

// t0 is the tests' "now".
var t0 = time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)

const region = "eu-west-1"

// The catalogue the table tests draw from. Prices are made up but ordered
// as in life: spot below on-demand, GPUs dear.
var (
	a100 = api.GPU{Name: "NVIDIA A100-SXM4-40GB", MemoryMiB: 40 << 10}
	v100 = api.GPU{Name: "Tesla V100-SXM2-16GB", MemoryMiB: 16 << 10}
	t4   = api.GPU{Name: "Tesla T4", MemoryMiB: 15 << 10}

	m5large   = catalogue("m5.large", 0.096, 2, 8)
	m5xlarge  = catalogue("m5.xlarge", 0.192, 4, 16)
	m52xlarge = catalogue("m5.2xlarge", 0.384, 8, 32)
	g4dn      = catalogue("g4dn.xlarge", 0.526, 4, 16, t4)
	p32xlarge = catalogue("p3.2xlarge", 3.06, 8, 61, v100)
	p38xlarge = catalogue("p3.8xlarge", 12.24, 32, 244, v100, v100, v100, v100)
	p4d       = catalogue("p4d.24xlarge", 32.77, 96, 1152, a100, a100, a100, a100, a100, a100, a100, a100)
)

// catalogue is an on-demand offer in the tests' region.
func catalogue(typ string, price float64, cpus int, memGB int64, gpus ...api.GPU) backend.Offer {
	return backend.Offer{Backend: "aws", Region: region, InstanceType: typ, CPUs: cpus, MemoryMiB: memGB << 10, GPUs: gpus, PricePerHour: price}
}

// spot is o's spot offer at a third of the price, or at price when given.
func spot(o backend.Offer, price ...float64) backend.Offer {
	o.Spot = true
	o.PricePerHour /= 3
	if len(price) > 0 {
		o.PricePerHour = price[0]
	}
	return o
}

// limitOf allows user up to max instances of o.
func limitOf(id, user string, o backend.Offer, max int) Limit {
	return Limit{ID: id, UserID: user, Backend: o.Backend, Region: o.Region, InstanceType: o.InstanceType, Spot: o.Spot, Max: max, Enabled: true}
}

// job is a pending job queued at t0 plus seq seconds.
func job(id, user string, seq int, r api.Resources) Job {
	return Job{ID: id, UserID: user, Resources: r, QueuedAt: t0.Add(time.Duration(seq) * time.Second)}
}

func cpus(n int) api.Resources { return api.Resources{CPU: n} }

func gpus(count int, name string, memGB int64) api.Resources {
	return api.Resources{GPU: &api.GPURequest{Count: count, Name: name, MemoryMiB: memGB << 10}}
}

func interruptible(r api.Resources) api.Resources {
	r.Interruptible = true
	return r
}

// idle is a running instance of limit l idle since ago before t0.
func idle(id string, l Limit, o backend.Offer, ago time.Duration) Instance {
	return Instance{ID: id, LimitID: l.ID, Offer: o, State: InstanceRunning, IdleSince: t0.Add(-ago), StartedAt: t0.Add(-time.Hour)}
}

// busy is a running instance of limit l running jobID, started ago before t0.
func busy(id string, l Limit, o backend.Offer, jobID string, ago time.Duration) Instance {
	return Instance{ID: id, LimitID: l.ID, Offer: o, State: InstanceRunning, JobID: jobID, StartedAt: t0.Add(-ago)}
}

// launching is a launching instance of limit l for jobID ("" for none).
func launching(id string, l Limit, o backend.Offer, jobID string, ago time.Duration) Instance {
	return Instance{ID: id, LimitID: l.ID, Offer: o, State: InstanceLaunching, JobID: jobID, StartedAt: t0.Add(-ago)}
}

func launch(l Limit, o backend.Offer, jobIDs ...string) Launch {
	return Launch{LimitID: l.ID, Offer: o, Count: len(jobIDs), JobIDs: jobIDs}
}

func onInstance(jobID, instanceID string) Binding {
	return Binding{JobID: jobID, InstanceID: instanceID}
}

// checkDecision compares got with want, the Waiting messages only where
// want has one.
func checkDecision(t *testing.T, got, want Decision) {
	t.Helper()
	if len(got.Waiting) == len(want.Waiting) {
		for i := range want.Waiting {
			if want.Waiting[i].Message == "" {
				got.Waiting[i].Message = ""
			}
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("decision:\n got %s\nwant %s", show(got), show(want))
	}
}

func show(d Decision) string {
	b, _ := json.MarshalIndent(d, "     ", "  ")
	return string(b)
}
