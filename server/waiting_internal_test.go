package server

import (
	"maps"
	"testing"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/autoscale/plan"
	"github.com/dstackai/dstack/store"
)

func TestReasonChanges(t *testing.T) {
	t.Parallel()
	small := []plan.RegisteredRunner{{Resources: api.HostResources{CPUs: 8, MemoryMiB: 16 << 10}}}
	busy := []plan.RegisteredRunner{
		{Resources: api.HostResources{CPUs: 8, MemoryMiB: 16 << 10}, Busy: true},
		{Resources: api.HostResources{CPUs: 8, MemoryMiB: 16 << 10}, Busy: true},
	}
	const allBusy = "waiting: 2 runners that fit are busy"
	const tooBig = "no runner has 64 CPUs (the largest has 8); add a runner that does, or lower resources"
	const noRunner = "no runner is registered: start one with dstack-runner start"
	job := func(id, user string, attempt, cpu int) *store.PendingJob {
		return &store.PendingJob{ID: id, UserID: user, Attempt: attempt, Resources: api.Resources{CPU: cpu}}
	}
	for _, tc := range []struct {
		name        string
		pending     []*store.PendingJob
		runners     map[string][]plan.RegisteredRunner
		written     map[jobAttempt]string
		want        map[jobAttempt]string
		wantChanges map[string]string
	}{
		{
			name:        "new reasons are written, fitting jobs left alone",
			pending:     []*store.PendingJob{job("a", "u1", 0, 64), job("b", "u1", 0, 2), job("c", "u2", 0, 1)},
			runners:     map[string][]plan.RegisteredRunner{"u1": small},
			written:     map[jobAttempt]string{},
			want:        map[jobAttempt]string{{"a", 0}: tooBig, {"c", 0}: noRunner},
			wantChanges: map[string]string{"a": tooBig, "c": noRunner},
		},
		{
			name:        "a reason already written is not written again",
			pending:     []*store.PendingJob{job("a", "u1", 0, 64)},
			runners:     map[string][]plan.RegisteredRunner{"u1": small},
			written:     map[jobAttempt]string{{"a", 0}: tooBig},
			want:        map[jobAttempt]string{{"a", 0}: tooBig},
			wantChanges: map[string]string{},
		},
		{
			name:        "a reason this loop wrote is cleared once a runner fits",
			pending:     []*store.PendingJob{job("a", "u1", 0, 64)},
			runners:     map[string][]plan.RegisteredRunner{"u1": {{Resources: api.HostResources{CPUs: 64, MemoryMiB: 1024}}}},
			written:     map[jobAttempt]string{{"a", 0}: tooBig},
			want:        map[jobAttempt]string{},
			wantChanges: map[string]string{"a": ""},
		},
		{
			name: "a requeued job's own reason stays",
			// Written at attempt 0; the job was claimed and requeued since,
			// with "runner r1 stopped responding; requeued".
			pending:     []*store.PendingJob{job("a", "u1", 1, 4)},
			runners:     map[string][]plan.RegisteredRunner{"u1": small},
			written:     map[jobAttempt]string{{"a", 0}: noRunner},
			want:        map[jobAttempt]string{},
			wantChanges: map[string]string{},
		},
		{
			name:        "runners that fit are busy: the job says so, not that none fits",
			pending:     []*store.PendingJob{job("a", "u1", 0, 2), job("b", "u1", 0, 64)},
			runners:     map[string][]plan.RegisteredRunner{"u1": busy},
			written:     map[jobAttempt]string{},
			want:        map[jobAttempt]string{{"a", 0}: allBusy, {"b", 0}: tooBig},
			wantChanges: map[string]string{"a": allBusy, "b": tooBig},
		},
		{
			name:        "a busy reason is cleared once a runner that fits is free",
			pending:     []*store.PendingJob{job("a", "u1", 0, 2)},
			runners:     map[string][]plan.RegisteredRunner{"u1": append(busy, small...)},
			written:     map[jobAttempt]string{{"a", 0}: allBusy},
			want:        map[jobAttempt]string{},
			wantChanges: map[string]string{"a": ""},
		},
		{
			name:        "a reason that changed is rewritten",
			pending:     []*store.PendingJob{job("a", "u1", 0, 64)},
			runners:     map[string][]plan.RegisteredRunner{"u1": small},
			written:     map[jobAttempt]string{{"a", 0}: noRunner},
			want:        map[jobAttempt]string{{"a", 0}: tooBig},
			wantChanges: map[string]string{"a": tooBig},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			want, changes := reasonChanges(tc.pending, tc.runners, tc.written)
			if !maps.Equal(want, tc.want) {
				t.Errorf("want = %v, expected %v", want, tc.want)
			}
			if !maps.Equal(changes, tc.wantChanges) {
				t.Errorf("changes = %v, expected %v", changes, tc.wantChanges)
			}
		})
	}
}

func TestRunnersByUserKeepsOnlyRunnersThatMayTakeJobs(t *testing.T) {
	t.Parallel()
	res := api.HostResources{CPUs: 1, MemoryMiB: 1024}
	got := runnersByUser([]*store.Runner{
		{UserID: "u1", Online: true, Resources: res},
		{UserID: "u1", Online: false, Resources: res},                    // self-hosted, may come back
		{UserID: "u1", Online: true, InstanceID: "i-1", Resources: res},  // on-demand, still up
		{UserID: "u2", Online: false, InstanceID: "i-2", Resources: res}, // on-demand, gone
	})
	if len(got["u1"]) != 3 || len(got["u2"]) != 0 {
		t.Errorf("runnersByUser = %v; want 3 runners of u1, none of u2", got)
	}
}
