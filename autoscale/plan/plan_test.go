package plan

import (
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/backend"
)

// TestLaunch covers rule 3's choice of a new instance: fit, price, purchase
// type, room, unavailability, batching and users.
func TestLaunch(t *testing.T) {
	t.Parallel()
	var (
		small    = limitOf("l-small", "u1", m5large, 5)
		medium   = limitOf("l-medium", "u1", m5xlarge, 5)
		large    = limitOf("l-large", "u1", m52xlarge, 5)
		smallS   = limitOf("l-small-spot", "u1", spot(m5large), 5)
		smallS2  = limitOf("l-small-spot2", "u1", spot(m5large, 0.5), 5)
		gpuT4    = limitOf("l-t4", "u1", g4dn, 5)
		gpuV100  = limitOf("l-v100", "u1", p32xlarge, 5)
		gpuV100x = limitOf("l-v100x4", "u1", p38xlarge, 5)
		gpuA100  = limitOf("l-a100", "u1", p4d, 5)
		other    = limitOf("l-other", "u2", m5large, 5)
		all      = []backend.Offer{m5large, m5xlarge, m52xlarge, spot(m5large), g4dn, p32xlarge, p38xlarge, p4d}
	)
	tests := []struct {
		name string
		s    Snapshot
		want Decision
	}{
		{
			name: "cheapest offer that fits",
			s: Snapshot{
				Limits: []Limit{large, medium, small},
				Jobs:   []Job{job("j1", "u1", 0, cpus(3)), job("j2", "u1", 1, api.Resources{MemoryMiB: 20 << 10}), job("j3", "u1", 2, cpus(1))},
			},
			want: Decision{Launches: []Launch{launch(large, m52xlarge, "j2"), launch(medium, m5xlarge, "j1"), launch(small, m5large, "j3")}},
		},
		{
			name: "several jobs of one offer are one launch",
			s: Snapshot{
				Limits: []Limit{small},
				Jobs:   []Job{job("j3", "u1", 3, cpus(1)), job("j1", "u1", 1, cpus(1)), job("j2", "u1", 2, cpus(2))},
			},
			want: Decision{Launches: []Launch{launch(small, m5large, "j1", "j2", "j3")}},
		},
		{
			name: "room goes to the jobs queued first",
			s: Snapshot{
				Limits: []Limit{limitOf("l-small", "u1", m5large, 2)},
				Jobs:   []Job{job("j-late", "u1", 9, cpus(1)), job("j-b", "u1", 1, cpus(1)), job("j-a", "u1", 1, cpus(1))},
			},
			want: Decision{
				Launches: []Launch{launch(small, m5large, "j-a", "j-b")},
				Waiting:  []Waiting{{JobID: "j-late", Code: WaitNoRoom}},
			},
		},
		{
			name: "spot only for interruptible jobs",
			s: Snapshot{
				Limits: []Limit{small, smallS},
				Jobs:   []Job{job("j1", "u1", 0, cpus(1)), job("j2", "u1", 1, interruptible(cpus(1)))},
			},
			want: Decision{Launches: []Launch{launch(small, m5large, "j1"), launch(smallS, spot(m5large), "j2")}},
		},
		{
			name: "interruptible takes on-demand when it is cheaper",
			s: Snapshot{
				Offers: []backend.Offer{m5large, spot(m5large, 0.5)},
				Limits: []Limit{small, smallS2},
				Jobs:   []Job{job("j1", "u1", 0, interruptible(cpus(1)))},
			},
			want: Decision{Launches: []Launch{launch(small, m5large, "j1")}},
		},
		{
			name: "interruptible takes on-demand when spot is full",
			s: Snapshot{
				Limits: []Limit{small, limitOf("l-small-spot", "u1", spot(m5large), 1)},
				Jobs:   []Job{job("j1", "u1", 0, interruptible(cpus(1))), job("j2", "u1", 1, interruptible(cpus(1)))},
			},
			want: Decision{Launches: []Launch{launch(small, m5large, "j2"), launch(smallS, spot(m5large), "j1")}},
		},
		{
			name: "GPU count, name case-insensitively and memory per GPU",
			s: Snapshot{
				Limits: []Limit{gpuA100, gpuT4, gpuV100, gpuV100x},
				Jobs: []Job{
					job("j-any", "u1", 0, gpus(1, "", 0)),
					job("j-v100", "u1", 1, gpus(1, "v100", 0)),
					job("j-16g", "u1", 2, gpus(1, "", 16)),
					job("j-2gpu", "u1", 3, gpus(2, "", 0)),
					job("j-a100", "u1", 4, gpus(1, "A100", 0)),
					job("j-a100-80", "u1", 5, gpus(1, "A100", 80)),
					job("j-9gpu", "u1", 6, gpus(9, "", 0)),
				},
			},
			want: Decision{
				Launches: []Launch{
					launch(gpuA100, p4d, "j-a100"),
					launch(gpuT4, g4dn, "j-any"),
					launch(gpuV100, p32xlarge, "j-v100", "j-16g"),
					launch(gpuV100x, p38xlarge, "j-2gpu"),
				},
				Waiting: []Waiting{
					{JobID: "j-9gpu", Code: WaitNoLimit, Message: "no limit allows an on-demand instance with 9 GPUs"},
					{JobID: "j-a100-80", Code: WaitNoLimit, Message: "no limit allows an on-demand instance with 1 GPU named A100 with 80GB each"},
				},
			},
		},
		{
			name: "a spent budget launches nothing; an idle instance still takes a job",
			s: Snapshot{
				Limits:    []Limit{small},
				Instances: []Instance{idle("i1", small, m5large, time.Minute)},
				Jobs:      []Job{job("j1", "u1", 0, cpus(1)), job("j2", "u1", 1, cpus(1))},
				Budget:    "the monthly budget is spent",
			},
			want: Decision{
				Bindings: []Binding{onInstance("j1", "i1")},
				Waiting:  []Waiting{{JobID: "j2", Code: WaitBudget, Message: "the monthly budget is spent"}},
			},
		},
		{
			name: "never over the maximum, launching and terminating instances included",
			s: Snapshot{
				Limits: []Limit{limitOf("l-small", "u1", m5large, 3)},
				Instances: []Instance{
					busy("i1", small, m5large, "r1", time.Hour),
					{ID: "i2", LimitID: small.ID, Offer: m5large, State: InstanceTerminating, StartedAt: t0.Add(-time.Hour)},
				},
				Jobs: []Job{job("j1", "u1", 0, cpus(1)), job("j2", "u1", 1, cpus(1))},
			},
			want: Decision{
				Launches: []Launch{launch(small, m5large, "j1")},
				Waiting:  []Waiting{{JobID: "j2", Code: WaitNoRoom, Message: "the limit that allows an on-demand instance with 1 CPU (m5.large on-demand) is at its maximum of 3"}},
			},
		},
		{
			name: "unavailable offers are skipped until their time",
			s: Snapshot{
				Limits: []Limit{small, medium},
				Unavailable: map[backend.OfferKey]time.Time{
					m5large.Key():  t0.Add(time.Minute),
					m5xlarge.Key(): t0, // its time has come
				},
				Jobs: []Job{job("j1", "u1", 0, cpus(1))},
			},
			want: Decision{Launches: []Launch{launch(medium, m5xlarge, "j1")}},
		},
		{
			name: "every fitting offer unavailable",
			s: Snapshot{
				Limits:      []Limit{small},
				Unavailable: map[backend.OfferKey]time.Time{m5large.Key(): t0.Add(90 * time.Second)},
				Jobs:        []Job{job("j1", "u1", 0, cpus(1))},
			},
			want: Decision{Waiting: []Waiting{{JobID: "j1", Code: WaitUnavailable,
				Message: "the cloud refused every allowed offer of an on-demand instance with 1 CPU; trying again after 10:01:30 UTC"}}},
		},
		{
			name: "limits are the server's: any user's jobs use them, whoever created them",
			s: Snapshot{
				Limits: []Limit{other},
				Jobs:   []Job{job("j1", "u1", 0, cpus(1)), job("j2", "u2", 1, cpus(1))},
			},
			want: Decision{Launches: []Launch{launch(other, m5large, "j1", "j2")}},
		},
		{
			name: "capacity goes round-robin by user, FIFO within a user",
			s: Snapshot{
				Limits: []Limit{limitOf("l-two", "u1", m5large, 4)},
				Jobs: []Job{
					job("a1", "u1", 0, cpus(1)), job("a2", "u1", 1, cpus(1)), job("a3", "u1", 2, cpus(1)),
					job("b1", "u2", 3, cpus(1)), job("b2", "u2", 4, cpus(1)), job("c1", "u3", 5, cpus(1)),
				},
			},
			want: Decision{
				Launches: []Launch{launch(limitOf("l-two", "u1", m5large, 4), m5large, "a1", "b1", "c1", "a2")},
				Waiting: []Waiting{
					{JobID: "a3", Code: WaitNoRoom, Message: "the limit that allows an on-demand instance with 1 CPU (m5.large on-demand) is at its maximum of 4"},
					{JobID: "b2", Code: WaitNoRoom, Message: "the limit that allows an on-demand instance with 1 CPU (m5.large on-demand) is at its maximum of 4"},
				},
			},
		},
		{
			name: "a user at their cap of running jobs waits; the others start",
			s: Snapshot{
				Limits: []Limit{other},
				Users:  []User{{ID: "u1", MaxRunning: 2, Running: 1}, {ID: "u2", MaxRunning: 3}},
				Runners: []Runner{{ID: "r-shared", UserID: "u3", Free: api.HostResources{CPUs: 8, MemoryMiB: 32 << 10}, Shared: true},
					{ID: "r-u2", UserID: "u2", Free: api.HostResources{CPUs: 8, MemoryMiB: 32 << 10}}},
				Jobs: []Job{job("a1", "u1", 0, cpus(1)), job("a2", "u1", 1, cpus(1)), job("b1", "u2", 2, cpus(1)), job("b2", "u2", 3, cpus(1))},
			},
			want: Decision{
				Launches: []Launch{launch(other, m5large, "b2")},
				Bindings: []Binding{{JobID: "a1", RunnerID: "r-shared"}, {JobID: "b1", RunnerID: "r-u2"}},
				Waiting:  []Waiting{{JobID: "a2", Code: WaitUserLimit, Message: "waiting: user limit of 2 running jobs"}},
			},
		},
		{
			name: "a member's runner takes only its user's jobs, a shared one anyone's",
			s: Snapshot{
				Runners: []Runner{{ID: "r-u2", UserID: "u2", Free: api.HostResources{CPUs: 8, MemoryMiB: 32 << 10}}},
				Registered: []RegisteredRunner{
					{UserID: "u2", Resources: api.HostResources{CPUs: 8, MemoryMiB: 32 << 10}},
					{UserID: "u3", Resources: api.HostResources{CPUs: 8, MemoryMiB: 32 << 10}, Shared: true, Busy: true},
				},
				Jobs: []Job{job("a1", "u1", 0, cpus(1))},
			},
			want: Decision{Waiting: []Waiting{{JobID: "a1", Code: WaitNoLimit,
				Message: "waiting: 1 runner that fits is busy; no on-demand limit is set to launch more (`dstack on-demand limit` adds one)"}}},
		},
		{
			name: "a limit whose offer no backend sells does not launch",
			s: Snapshot{
				Offers: []backend.Offer{m5xlarge},
				Limits: []Limit{small, medium},
				Jobs:   []Job{job("j1", "u1", 0, cpus(1)), job("j2", "u1", 1, cpus(8))},
			},
			want: Decision{
				Launches: []Launch{launch(medium, m5xlarge, "j1")},
				Waiting: []Waiting{{JobID: "j2", Code: WaitNoLimit,
					Message: "no limit allows an on-demand instance with 8 CPUs; 1 of the limits names an instance type no backend offers now"}},
			},
		},
		{
			name: "limits of a backend the server does not have say so",
			s: Snapshot{
				Offers:   []backend.Offer{}, // AWS is not configured: nothing of it is offered
				Limits:   []Limit{small, medium},
				Jobs:     []Job{job("j1", "u1", 0, cpus(1))},
				Backends: []string{"local"},
			},
			want: Decision{Waiting: []Waiting{{JobID: "j1", Code: WaitNoLimit,
				Message: "no limit allows an on-demand instance with 1 CPU; the AWS limits wait: AWS is not configured on this server (`dstack aws config`)"}}},
		},
		{
			name: "spot limits do not serve jobs that are not interruptible",
			s: Snapshot{
				Limits: []Limit{smallS},
				Jobs:   []Job{job("j1", "u1", 0, api.Resources{CPU: 2, MemoryMiB: 4 << 10})},
			},
			want: Decision{Waiting: []Waiting{{JobID: "j1", Code: WaitNoLimit,
				Message: "no limit allows an on-demand instance with 2 CPUs, 4GB memory; spot limits allow it, for interruptible jobs only (`interruptible: true`)"}}},
		},
		{
			name: "disabled limits launch nothing",
			s: Snapshot{
				Limits: []Limit{{ID: "l1", UserID: "u1", Backend: "aws", Region: region, InstanceType: "m5.large", Max: 3}},
				Jobs:   []Job{job("j1", "u1", 0, interruptible(gpus(4, "", 0)))},
			},
			want: Decision{Waiting: []Waiting{{JobID: "j1", Code: WaitNoLimit,
				Message: "no runner is registered and on-demand runners are disabled; start one with dstack-runner start, or enable them with `dstack on-demand enable`"}}},
		},
		{
			name: "runners that fit are only busy",
			s: Snapshot{
				Registered: []RegisteredRunner{
					{UserID: "u1", Resources: api.HostResources{CPUs: 2, MemoryMiB: 4 << 10}, Busy: true},
					{UserID: "u1", Resources: api.HostResources{CPUs: 8, MemoryMiB: 4 << 10}, Busy: true},
					{UserID: "u1", Resources: api.HostResources{CPUs: 1, MemoryMiB: 4 << 10}, Busy: true}, // too small
					{UserID: "u2", Resources: api.HostResources{CPUs: 64, MemoryMiB: 4 << 10}},            // not theirs
				},
				Jobs: []Job{job("j1", "u1", 0, cpus(2))},
			},
			want: Decision{Waiting: []Waiting{{JobID: "j1", Code: WaitNoLimit,
				Message: "waiting: 2 runners that fit are busy; no on-demand limit is set to launch more (`dstack on-demand limit` adds one)"}}},
		},
		{
			name: "a runner that fits is busy and another offline",
			s: Snapshot{
				Registered: []RegisteredRunner{
					{UserID: "u1", Resources: api.HostResources{CPUs: 2, MemoryMiB: 4 << 10}, Busy: true},
					{UserID: "u1", Resources: api.HostResources{CPUs: 2, MemoryMiB: 4 << 10}, Offline: true},
				},
				Limits: []Limit{{ID: "l1", UserID: "u1", Backend: "aws", Region: region, InstanceType: "m5.large", Max: 3}},
				Jobs:   []Job{job("j1", "u1", 0, cpus(2))},
			},
			want: Decision{Waiting: []Waiting{{JobID: "j1", Code: WaitNoLimit,
				Message: "waiting: 1 runner that fits is busy and 1 is offline; on-demand runners are disabled (`dstack on-demand enable` enables them)"}}},
		},
		{
			name: "a free runner that fits went to an earlier job",
			s: Snapshot{
				Runners:    []Runner{{ID: "r1", UserID: "u1", Free: api.HostResources{CPUs: 2, MemoryMiB: 4 << 10}}},
				Registered: []RegisteredRunner{{UserID: "u1", Resources: api.HostResources{CPUs: 2, MemoryMiB: 4 << 10}}},
				Jobs:       []Job{job("j1", "u1", 0, cpus(1)), job("j2", "u1", 1, cpus(1))},
			},
			want: Decision{
				Bindings: []Binding{{JobID: "j1", RunnerID: "r1"}},
				Waiting: []Waiting{{JobID: "j2", Code: WaitNoLimit,
					Message: "waiting: 1 runner that fits is busy; no on-demand limit is set to launch more (`dstack on-demand limit` adds one)"}},
			},
		},
		{
			name: "no registered runner has the CPUs",
			s: Snapshot{
				Registered: []RegisteredRunner{
					{UserID: "u1", Resources: api.HostResources{CPUs: 2, MemoryMiB: 4 << 10}, Busy: true},
					{UserID: "u1", Resources: api.HostResources{CPUs: 1, MemoryMiB: 4 << 10}},
				},
				Jobs: []Job{job("j1", "u1", 0, cpus(1000))},
			},
			want: Decision{Waiting: []Waiting{{JobID: "j1", Code: WaitNoLimit,
				Message: "no runner has 1000 CPUs (the largest has 2) and no on-demand limit is set; add a runner that does, or lower resources, or add a limit with `dstack on-demand limit`"}}},
		},
		{
			name: "no registered runner has the memory, and no limit allows it",
			s: Snapshot{
				Registered: []RegisteredRunner{{UserID: "u1", Resources: api.HostResources{CPUs: 8, MemoryMiB: 8 << 10}}},
				Limits:     []Limit{small},
				Jobs:       []Job{job("j1", "u1", 0, api.Resources{MemoryMiB: 512 << 10})},
			},
			want: Decision{Waiting: []Waiting{{JobID: "j1", Code: WaitNoLimit,
				Message: "no runner has 512GB memory (the largest has 8GB) and no limit allows an on-demand instance with 512GB memory"}}},
		},
		{
			name: "no registered runner has a GPU, and on-demand runners are disabled",
			s: Snapshot{
				Registered: []RegisteredRunner{{UserID: "u1", Resources: api.HostResources{CPUs: 8, MemoryMiB: 8 << 10}, Busy: true}},
				Limits:     []Limit{{ID: "l1", UserID: "u1", Backend: "aws", Region: region, InstanceType: "m5.large", Max: 3}},
				Jobs:       []Job{job("j1", "u1", 0, gpus(1, "", 0))},
			},
			want: Decision{Waiting: []Waiting{{JobID: "j1", Code: WaitNoLimit,
				Message: "no runner has a GPU and on-demand runners are disabled; add a runner that does, or lower resources, or enable them with `dstack on-demand enable`"}}},
		},
		{
			name: "the reason names the GPUs asked for",
			s: Snapshot{
				Limits: []Limit{small, gpuV100},
				Jobs:   []Job{job("j1", "u1", 0, interruptible(gpus(4, "", 0)))},
			},
			want: Decision{Waiting: []Waiting{{JobID: "j1", Code: WaitNoLimit, Message: "no limit allows an instance with 4 GPUs"}}},
		},
		{
			name: "a maximum of zero allows nothing",
			s: Snapshot{
				Limits: []Limit{limitOf("l-small", "u1", m5large, 0), limitOf("l-medium", "u1", m5xlarge, 0)},
				Jobs:   []Job{job("j1", "u1", 0, cpus(1))},
			},
			want: Decision{Waiting: []Waiting{{JobID: "j1", Code: WaitNoRoom, Message: "all 2 limits that allow an on-demand instance with 1 CPU are at their maximum"}}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.s.Now = t0
			if tc.s.Offers == nil {
				tc.s.Offers = all
			}
			checkDecision(t, Plan(tc.s), tc.want)
		})
	}
}
