package plan_test

import (
	"fmt"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/autoscale/plan"
	"github.com/dstackai/dstack/backend"
)

func ExamplePlan() {
	now := time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)
	m5 := backend.Offer{Backend: "aws", Region: "eu-west-1", InstanceType: "m5.xlarge", Spot: true,
		CPUs: 4, MemoryMiB: 15 << 10, PricePerHour: 0.07}
	d := plan.Plan(plan.Snapshot{
		Now:    now,
		Offers: []backend.Offer{m5},
		Limits: []plan.Limit{{ID: "l1", UserID: "alice", Backend: "aws", Region: "eu-west-1",
			InstanceType: "m5.xlarge", Spot: true, Max: 2, Enabled: true}},
		Jobs: []plan.Job{
			{ID: "prepare", UserID: "alice", QueuedAt: now, Resources: api.Resources{CPU: 2, Interruptible: true}},
			{ID: "train", UserID: "alice", QueuedAt: now, Resources: api.Resources{CPU: 4, Interruptible: true}},
			{ID: "eval", UserID: "alice", QueuedAt: now, Resources: api.Resources{GPU: &api.GPURequest{Count: 4}, Interruptible: true}},
		},
	})
	for _, l := range d.Launches {
		fmt.Printf("launch %d × %s for %v\n", l.Count, l.Offer.Key(), l.JobIDs)
	}
	for _, w := range d.Waiting {
		fmt.Printf("%s waits: %s\n", w.JobID, w.Message)
	}
	// Output:
	// launch 2 × aws/eu-west-1/m5.xlarge/spot for [prepare train]
	// eval waits: no limit allows an instance with 4 GPUs
}
