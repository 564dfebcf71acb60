package plan

import (
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/backend"
)

// TestTerminate covers rules 1, 2 and 4: deleted, disabled and shrunk
// limits, and idle timeouts.
func TestTerminate(t *testing.T) {
	t.Parallel()
	small := limitOf("l-small", "u1", m5large, 5)
	shrunk := func(max int) Limit { l := small; l.Max = max; return l }
	disabled := small
	disabled.Enabled = false
	tests := []struct {
		name string
		s    Snapshot
		want Decision
	}{
		{
			name: "a deleted limit's instances all go",
			s: Snapshot{
				Instances: []Instance{
					idle("i1", small, m5large, time.Second),
					busy("i2", small, m5large, "r1", time.Hour),
					{ID: "i3", LimitID: small.ID, Offer: m5large, State: InstanceTerminating},
				},
			},
			want: Decision{Terminations: []Termination{
				{InstanceID: "i1", LimitID: "l-small", Reason: ReasonLimitDeleted},
				{InstanceID: "i2", LimitID: "l-small", Reason: ReasonLimitDeleted, JobID: "r1", Requeue: true},
			}},
		},
		{
			name: "a disabled limit's instances all go, and it takes no job",
			s: Snapshot{
				Limits: []Limit{disabled},
				Instances: []Instance{
					idle("i1", small, m5large, time.Second),
					launching("i2", small, m5large, "j1", time.Minute),
				},
				Jobs: []Job{job("j1", "u1", 0, cpus(1))},
			},
			want: Decision{
				Terminations: []Termination{
					{InstanceID: "i1", LimitID: "l-small", Reason: ReasonLimitDisabled},
					{InstanceID: "i2", LimitID: "l-small", Reason: ReasonLimitDisabled, JobID: "j1"},
				},
				Waiting: []Waiting{{JobID: "j1", Code: WaitNoLimit}},
			},
		},
		{
			name: "a decrease takes idle ones first",
			s: Snapshot{
				Limits: []Limit{shrunk(2)},
				Instances: []Instance{
					busy("i1", small, m5large, "r1", time.Minute),
					idle("i2", small, m5large, time.Second),
					busy("i3", small, m5large, "r3", time.Hour),
					launching("i4", small, m5large, "", time.Second),
				},
			},
			want: Decision{Terminations: []Termination{
				{InstanceID: "i2", LimitID: "l-small", Reason: ReasonOverLimit},
				{InstanceID: "i4", LimitID: "l-small", Reason: ReasonOverLimit},
			}},
		},
		{
			name: "then the most recently started busy ones, whose jobs are requeued",
			s: Snapshot{
				Limits: []Limit{shrunk(1)},
				Instances: []Instance{
					busy("i1", small, m5large, "r1", time.Minute),
					idle("i2", small, m5large, time.Second),
					busy("i3", small, m5large, "r3", time.Hour),
					busy("i4", small, m5large, "r4", 2*time.Hour),
				},
			},
			want: Decision{Terminations: []Termination{
				{InstanceID: "i1", LimitID: "l-small", Reason: ReasonOverLimit, JobID: "r1", Requeue: true},
				{InstanceID: "i2", LimitID: "l-small", Reason: ReasonOverLimit},
				{InstanceID: "i3", LimitID: "l-small", Reason: ReasonOverLimit, JobID: "r3", Requeue: true},
			}},
		},
		{
			name: "an instance launching for a job goes before busy ones, and the job is planned anew",
			s: Snapshot{
				Limits: []Limit{shrunk(1), limitOf("l-medium", "u1", m5xlarge, 1)},
				Instances: []Instance{
					busy("i1", small, m5large, "r1", time.Hour),
					launching("i2", small, m5large, "j1", time.Second),
				},
				Jobs: []Job{job("j1", "u1", 0, cpus(1))},
			},
			want: Decision{
				Launches:     []Launch{launch(limitOf("l-medium", "u1", m5xlarge, 1), m5xlarge, "j1")},
				Terminations: []Termination{{InstanceID: "i2", LimitID: "l-small", Reason: ReasonOverLimit, JobID: "j1"}},
			},
		},
		{
			name: "terminating instances are not terminated again nor counted as extras",
			s: Snapshot{
				Limits: []Limit{shrunk(1)},
				Instances: []Instance{
					busy("i1", small, m5large, "r1", time.Hour),
					{ID: "i2", LimitID: small.ID, Offer: m5large, State: InstanceTerminating},
				},
				Jobs: []Job{job("j1", "u1", 0, cpus(1))},
			},
			want: Decision{Waiting: []Waiting{{JobID: "j1", Code: WaitNoRoom}}},
		},
		{
			name: "idle past the timeout goes, idle within it stays",
			s: Snapshot{
				Limits: []Limit{small},
				Instances: []Instance{
					idle("i1", small, m5large, 5*time.Minute),
					idle("i2", small, m5large, 4*time.Minute),
					{ID: "i3", LimitID: small.ID, Offer: m5large, State: InstanceRunning, StartedAt: t0.Add(-6 * time.Minute)},
					launching("i4", small, m5large, "", time.Hour),
				},
			},
			want: Decision{Terminations: []Termination{
				{InstanceID: "i1", LimitID: "l-small", Reason: ReasonIdle},
				{InstanceID: "i3", LimitID: "l-small", Reason: ReasonIdle},
			}},
		},
		{
			name: "the idle timeout is the snapshot's",
			s: Snapshot{
				IdleTimeout: time.Minute,
				Limits:      []Limit{small},
				Instances:   []Instance{idle("i1", small, m5large, 2*time.Minute), idle("i2", small, m5large, 30*time.Second)},
			},
			want: Decision{Terminations: []Termination{{InstanceID: "i1", LimitID: "l-small", Reason: ReasonIdle}}},
		},
		{
			name: "an idle instance past its timeout that takes a job stays",
			s: Snapshot{
				Limits:    []Limit{small},
				Instances: []Instance{idle("i1", small, m5large, time.Hour)},
				Jobs:      []Job{job("j1", "u1", 0, cpus(1))},
			},
			want: Decision{Bindings: []Binding{onInstance("j1", "i1")}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.s.Now = t0
			tc.s.Offers = []backend.Offer{m5large, m5xlarge}
			checkDecision(t, Plan(tc.s), tc.want)
		})
	}
}

// TestAbsorb covers rule 3's use of what exists before launching anything:
// reserved instances, free self-hosted runners, idle and launching instances.
func TestAbsorb(t *testing.T) {
	t.Parallel()
	small := limitOf("l-small", "u1", m5large, 5)
	medium := limitOf("l-medium", "u1", m5xlarge, 5)
	smallS := limitOf("l-small-spot", "u1", spot(m5large), 5)
	tests := []struct {
		name string
		s    Snapshot
		want Decision
	}{
		{
			name: "a job keeps the instance launching for it",
			s: Snapshot{
				Limits:    []Limit{small},
				Instances: []Instance{launching("i1", small, m5large, "j1", time.Minute)},
				Jobs:      []Job{job("j1", "u1", 0, cpus(1)), job("j2", "u1", 1, cpus(1))},
			},
			want: Decision{Launches: []Launch{launch(small, m5large, "j2")}, Bindings: []Binding{onInstance("j1", "i1")}},
		},
		{
			name: "a free runner of the user takes a job it fits, smallest runner first",
			s: Snapshot{
				Limits: []Limit{small},
				Runners: []Runner{
					{ID: "big", UserID: "u1", Free: api.HostResources{CPUs: 16, MemoryMiB: 64 << 10}},
					{ID: "tiny", UserID: "u1", Free: api.HostResources{CPUs: 1, MemoryMiB: 1 << 10}},
					{ID: "theirs", UserID: "u2", Free: api.HostResources{CPUs: 64, MemoryMiB: 64 << 10}},
				},
				Jobs: []Job{job("j1", "u1", 0, cpus(1)), job("j2", "u1", 1, cpus(1)), job("j3", "u1", 2, cpus(1))},
			},
			want: Decision{
				Launches: []Launch{launch(small, m5large, "j3")},
				Bindings: []Binding{{JobID: "j1", RunnerID: "tiny"}, {JobID: "j2", RunnerID: "big"}},
			},
		},
		{
			name: "a runner's GPUs are matched like an offer's",
			s: Snapshot{
				Runners: []Runner{{ID: "r1", UserID: "u1", Free: api.HostResources{CPUs: 8, MemoryMiB: 32 << 10, GPUs: []api.GPU{t4}}}},
				Jobs:    []Job{job("j1", "u1", 0, gpus(1, "a100", 0)), job("j2", "u1", 1, gpus(1, "t4", 0))},
			},
			want: Decision{
				Bindings: []Binding{{JobID: "j2", RunnerID: "r1"}},
				Waiting:  []Waiting{{JobID: "j1", Code: WaitNoLimit}},
			},
		},
		{
			name: "idle instances take jobs before launching ones, launching ones before a launch",
			s: Snapshot{
				Limits: []Limit{small, medium},
				Instances: []Instance{
					launching("i1", small, m5large, "", time.Minute),
					idle("i2", medium, m5xlarge, time.Minute),
					launching("i3", small, m5large, "gone-job", time.Minute),
				},
				Jobs: []Job{job("j1", "u1", 0, cpus(1)), job("j2", "u1", 1, cpus(1)), job("j3", "u1", 2, cpus(1)), job("j4", "u1", 3, cpus(1))},
			},
			want: Decision{
				Launches: []Launch{launch(small, m5large, "j4")},
				Bindings: []Binding{onInstance("j1", "i2"), onInstance("j2", "i1"), onInstance("j3", "i3")},
			},
		},
		{
			name: "an instance too small takes nothing; one of a limit another user created does",
			s: Snapshot{
				Limits: []Limit{small, medium, limitOf("l-theirs", "u2", m52xlarge, 1)},
				Instances: []Instance{
					idle("i1", small, m5large, time.Minute),
					idle("i2", limitOf("l-theirs", "u2", m52xlarge, 1), m52xlarge, time.Minute),
				},
				Jobs: []Job{job("j1", "u1", 0, cpus(4))},
			},
			want: Decision{Bindings: []Binding{onInstance("j1", "i2")}},
		},
		{
			name: "a spot instance takes only interruptible jobs",
			s: Snapshot{
				Limits:    []Limit{small, smallS},
				Instances: []Instance{idle("i1", smallS, spot(m5large), time.Minute)},
				Jobs:      []Job{job("j1", "u1", 0, cpus(1)), job("j2", "u1", 1, interruptible(cpus(1)))},
			},
			want: Decision{
				Launches: []Launch{launch(small, m5large, "j1")},
				Bindings: []Binding{onInstance("j2", "i1")},
			},
		},
		{
			name: "a busy instance takes nothing",
			s: Snapshot{
				Limits:    []Limit{limitOf("l-small", "u1", m5large, 1)},
				Instances: []Instance{busy("i1", small, m5large, "r1", time.Minute)},
				Jobs:      []Job{job("j1", "u1", 0, cpus(1))},
			},
			want: Decision{Waiting: []Waiting{{JobID: "j1", Code: WaitNoRoom}}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.s.Now = t0
			tc.s.Offers = []backend.Offer{m5large, m5xlarge, m52xlarge, spot(m5large)}
			checkDecision(t, Plan(tc.s), tc.want)
		})
	}
}
