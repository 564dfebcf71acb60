package plan

import (
	"maps"
	"testing"

	"github.com/dstackai/dstack/api"
)

func TestNoRunnerFits(t *testing.T) {
	t.Parallel()
	var (
		small = api.HostResources{CPUs: 8, MemoryMiB: 16 << 10}
		t4    = api.HostResources{CPUs: 4, MemoryMiB: 8 << 10, GPUs: []api.GPU{{Name: "Tesla T4", MemoryMiB: 16 << 10}}}
		a100s = api.HostResources{CPUs: 32, MemoryMiB: 256 << 10, GPUs: []api.GPU{
			{Name: "NVIDIA A100-SXM4-40GB", MemoryMiB: 40 << 10}, {Name: "NVIDIA A100-SXM4-40GB", MemoryMiB: 40 << 10}}}
		gpu = func(count int, name string, memMiB int64) *api.GPURequest {
			return &api.GPURequest{Count: count, Name: name, MemoryMiB: memMiB}
		}
	)
	for _, tc := range []struct {
		name    string
		r       api.Resources
		runners []api.HostResources
		want    string
	}{
		{"no runner", api.Resources{}, nil,
			"no runner is registered: start one with dstack-runner start"},
		{"nothing asked", api.Resources{}, []api.HostResources{small}, ""},
		{"one fits", api.Resources{CPU: 8, MemoryMiB: 16 << 10}, []api.HostResources{t4, small}, ""},
		{"too many CPUs", api.Resources{CPU: 64}, []api.HostResources{t4, small},
			"no runner has 64 CPUs (the largest has 8); add a runner that does, or lower resources"},
		{"one CPU too many", api.Resources{CPU: 2}, []api.HostResources{{CPUs: 1, MemoryMiB: 512}},
			"no runner has 2 CPUs (the largest has 1); add a runner that does, or lower resources"},
		{"too much memory", api.Resources{MemoryMiB: 64 << 10}, []api.HostResources{t4, small},
			"no runner has 64GB memory (the largest has 16GB); add a runner that does, or lower resources"},
		{"memory in MB", api.Resources{MemoryMiB: 1500}, []api.HostResources{{CPUs: 1, MemoryMiB: 1000}},
			"no runner has 1500MB memory (the largest has 1000MB); add a runner that does, or lower resources"},
		{"no GPU anywhere", api.Resources{GPU: gpu(1, "", 0)}, []api.HostResources{small},
			"no runner has a GPU; add a runner that does, or lower resources"},
		{"too many GPUs", api.Resources{GPU: gpu(4, "", 0)}, []api.HostResources{t4, a100s},
			"no runner has 4 GPUs (the most one has is 2); add a runner that does, or lower resources"},
		{"GPU name matches case-insensitively", api.Resources{GPU: gpu(1, "t4", 0)}, []api.HostResources{small, t4}, ""},
		{"GPU name nowhere", api.Resources{GPU: gpu(1, "A100", 0)}, []api.HostResources{small, t4},
			`no runner has a GPU matching "A100" (runners have Tesla T4); add a runner that does, or change resources.gpu.name`},
		{"too few GPUs of the name", api.Resources{GPU: gpu(2, "t4", 0)}, []api.HostResources{t4, a100s},
			`no runner has 2 GPUs matching "t4" (the most one has is 1); add a runner that does, or lower resources`},
		{"GPU memory", api.Resources{GPU: gpu(1, "A100", 80<<10)}, []api.HostResources{t4, a100s},
			`no runner has a GPU matching "A100" with 80GB memory (the largest has 40GB); add a runner that does, or lower resources`},
		{"GPU memory, no name", api.Resources{GPU: gpu(2, "", 24<<10)}, []api.HostResources{t4, {CPUs: 1, MemoryMiB: 1024, GPUs: []api.GPU{{Name: "T4", MemoryMiB: 16 << 10}, {Name: "L4", MemoryMiB: 24 << 10}}}},
			"no runner has 2 GPUs with 24GB memory each (the most one has is 1); add a runner that does, or lower resources"},
		{"each met, never together", api.Resources{CPU: 16, GPU: gpu(1, "T4", 0)}, []api.HostResources{t4, a100s},
			"no runner has all of 16 CPUs, 1 GPU named T4; add a runner that does, or lower resources"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := NoRunnerFits(tc.r, tc.runners)
			if got != tc.want {
				t.Errorf("NoRunnerFits(%+v) =\n  %q\nwant\n  %q", tc.r, got, tc.want)
			}
			// It agrees with Plan's fit: "" exactly when a runner fits.
			fits := false
			for _, h := range tc.runners {
				fits = fits || machineOf(h).fits(needOf(tc.r))
			}
			if fits != (got == "") {
				t.Errorf("fits = %v but reason = %q", fits, got)
			}
		})
	}
}

func TestWaitingWithoutBackend(t *testing.T) {
	t.Parallel()
	small := RegisteredRunner{UserID: "u1", Resources: api.HostResources{CPUs: 8, MemoryMiB: 16 << 10}}
	busy := small
	busy.Busy = true
	const allBusy = "waiting: 2 runners that fit are busy"
	const tooBig = "no runner has 64 CPUs (the largest has 8); add a runner that does, or lower resources"
	const noRunner = "no runner is registered: start one with dstack-runner start"
	job := func(id, user string, cpu int) Job {
		return Job{ID: id, UserID: user, Resources: api.Resources{CPU: cpu}}
	}
	for _, tc := range []struct {
		name       string
		jobs       []Job
		registered []RegisteredRunner
		users      []User
		want       map[string]string
	}{
		{
			name: "a shared runner takes anyone's jobs",
			jobs: []Job{job("a", "u2", 2), job("b", "u2", 64)},
			registered: []RegisteredRunner{{UserID: "u3", Shared: true,
				Resources: api.HostResources{CPUs: 8, MemoryMiB: 16 << 10}}},
			want: map[string]string{"b": tooBig},
		},
		{
			name:       "a user at their cap waits for it",
			jobs:       []Job{job("a", "u1", 2), job("b", "u2", 2)},
			registered: []RegisteredRunner{small, {UserID: "u2", Resources: small.Resources}},
			users:      []User{{ID: "u1", MaxRunning: 3, Running: 3}, {ID: "u2", MaxRunning: 3, Running: 2}},
			want:       map[string]string{"a": "waiting: user limit of 3 running jobs"},
		},
		{
			name:       "jobs a free runner fits do not wait; another user's runner does not count",
			jobs:       []Job{job("a", "u1", 64), job("b", "u1", 2), job("c", "u2", 1)},
			registered: []RegisteredRunner{small},
			want:       map[string]string{"a": tooBig, "c": noRunner},
		},
		{
			name:       "runners that fit are busy: the job says so, not that none fits",
			jobs:       []Job{job("a", "u1", 2), job("b", "u1", 64)},
			registered: []RegisteredRunner{busy, busy},
			want:       map[string]string{"a": allBusy, "b": tooBig},
		},
		{
			name:       "a free runner that fits among busy ones: no reason",
			jobs:       []Job{job("a", "u1", 2)},
			registered: []RegisteredRunner{busy, busy, small},
			want:       map[string]string{},
		},
		{
			name: "runners alike counted once stand for them all",
			jobs: []Job{job("a", "u1", 2), job("b", "u1", 64)},
			registered: []RegisteredRunner{
				{UserID: "u1", Resources: small.Resources, Busy: true, Count: 3000},
				{UserID: "u1", Resources: small.Resources, Offline: true, Count: 2},
			},
			want: map[string]string{"a": "waiting: 3000 runners that fit are busy and 2 are offline", "b": tooBig},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := map[string]string{}
			for _, w := range WaitingWithoutBackend(Snapshot{Jobs: tc.jobs, Registered: tc.registered, Users: tc.users}) {
				if w.Code != WaitNoRunner && w.Code != WaitUserLimit {
					t.Errorf("job %s: code %q", w.JobID, w.Code)
				}
				got[w.JobID] = w.Message
			}
			if !maps.Equal(got, tc.want) {
				t.Errorf("waiting = %v, want %v", got, tc.want)
			}
		})
	}
}
