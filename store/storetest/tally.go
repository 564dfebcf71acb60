package storetest

import (
	"encoding/json"
	"maps"
	"testing"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/store"
)

// kindKey is what RunnerTally tells runners apart by, with resources as
// JSON so that it is comparable.
type kindKey struct {
	user                                        string
	shared, onDemand, online, interrupted, busy bool
	resources                                   string
}

func resourcesKey(t *testing.T, r api.HostResources) string {
	t.Helper()
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// tally is RunnerTally by kind.
func (f *fixture) tally() map[kindKey]int {
	f.t.Helper()
	kinds, err := f.s.RunnerTally(f.ctx)
	if err != nil {
		f.t.Fatalf("RunnerTally: %v", err)
	}
	out := map[kindKey]int{}
	for _, k := range kinds {
		if k.Count < 1 {
			f.t.Errorf("RunnerTally has a kind of %d runners: %+v", k.Count, k)
		}
		out[kindKey{k.UserID, k.Shared, k.OnDemand, k.Online, k.Interrupted, k.Busy, resourcesKey(f.t, k.Resources)}] += k.Count
	}
	return out
}

var tallyTests = []test{
	{"counts what RunnerList lists", func(t *testing.T, open Open) {
		f := setup(t, open)
		alice, bob := f.user(), f.user()
		if got := f.tally(); len(got) != 0 {
			t.Fatalf("RunnerTally with no runner = %v", got)
		}
		f.runner(alice, cpuHost)
		f.runner(alice, cpuHost)
		busy := f.runner(alice, cpuHost)
		f.run(alice, spec("a"))
		j := f.claim(busy)
		f.offline(f.runner(alice, gpuHost))
		stopping := f.runner(alice, cpuHost)
		if _, _, err := f.s.RunnerInterrupt(f.ctx, store.RunnerInterruptParams{ID: stopping.ID, Reason: "reclaimed", Now: f.tick()}); err != nil {
			t.Fatalf("RunnerInterrupt: %v", err)
		}
		f.sharedRunner(bob)
		f.register(f.instances(f.limit(bob, 1), 1)[0])

		cpu := resourcesKey(t, cpuHost)
		want := map[kindKey]int{
			{user: alice.ID, online: true, resources: cpu}:                    2,
			{user: alice.ID, online: true, busy: true, resources: cpu}:        1,
			{user: alice.ID, resources: resourcesKey(t, gpuHost)}:             1,
			{user: alice.ID, online: true, interrupted: true, resources: cpu}: 1,
			{user: bob.ID, shared: true, online: true, resources: cpu}:        1,
			{user: bob.ID, onDemand: true, online: true, resources: cpu}:      1,
		}
		got := f.tally()
		if !maps.Equal(got, want) {
			t.Fatalf("RunnerTally = %v\nwant %v", got, want)
		}
		// It agrees with RunnerList, runner by runner.
		all, err := f.s.RunnerList(f.ctx, store.RunnerListParams{})
		if err != nil {
			t.Fatalf("RunnerList: %v", err)
		}
		listed := map[kindKey]int{}
		for _, r := range all {
			listed[kindKey{r.UserID, r.Shared, r.InstanceID != "", r.Online, r.InterruptedAt != nil, r.JobID != "", resourcesKey(t, r.Resources)}]++
		}
		if !maps.Equal(got, listed) {
			t.Errorf("RunnerTally = %v\nRunnerList counts %v", got, listed)
		}
		// A runner whose job ended is idle again.
		f.finish(j, api.StatusDone)
		got = f.tally()
		if n := got[kindKey{user: alice.ID, online: true, resources: cpu}]; n != 3 {
			t.Errorf("after the job ended, alice's idle CPU runners = %d, want 3 (%v)", n, got)
		}
		if n := got[kindKey{user: alice.ID, online: true, busy: true, resources: cpu}]; n != 0 {
			t.Errorf("after the job ended, alice's busy runners = %d, want none", n)
		}
	}},
}
