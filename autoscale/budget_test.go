package autoscale_test

import (
	"strings"
	"testing"
	"time"

	"github.com/dstackai/dstack/autoscale/plan"
	"github.com/dstackai/dstack/cost"
	"github.com/dstackai/dstack/store"
)

// TestBudgetStopsLaunches: once the month's cost reaches the budget, no
// instance is launched and the job that needs one says why; the running
// instance keeps its job. Raising the budget launches again.
func TestBudgetStopsLaunches(t *testing.T) {
	t.Parallel()
	e := setup(t)
	if err := e.st.SettingPut(e.ctx, store.SettingPutParams{Name: cost.SettingBudget, Value: "0.02"}); err != nil {
		t.Fatal(err)
	}
	e.limit("f.small", false, 3) // 0.01 an hour
	first := e.submit(small)
	e.step()
	if n := len(e.cloud.LaunchCalls()); n != 1 {
		t.Fatalf("%d launch calls under the budget, want 1", n)
	}
	ins := e.instances(store.InstanceLaunching)
	r := e.register(ins[0])
	if j := e.claim(r); j == nil || j.ID != first {
		t.Fatalf("claimed %+v, want %s", j, first)
	}
	e.clock.Advance(2*time.Hour + time.Minute) // 0.02 and a bit
	second := e.submit(small)
	e.step()
	if n := len(e.cloud.LaunchCalls()); n != 1 {
		t.Fatalf("%d launch calls over the budget, want still 1", n)
	}
	if got := e.job(second).StatusReason; !strings.Contains(got, "monthly on-demand budget of 0.02 USD is spent") {
		t.Fatalf("reason of the job over the budget = %q", got)
	}
	if w := e.c.Waiting()[second]; w.Code != plan.WaitBudget {
		t.Fatalf("waiting = %+v, want the budget", w)
	}
	if busy := e.instances(store.InstanceRunning); len(busy) != 1 || busy[0].JobID != first {
		t.Fatalf("running instances = %+v; want the first still on its job", busy)
	}
	if err := e.st.SettingPut(e.ctx, store.SettingPutParams{Name: cost.SettingBudget, Value: "10"}); err != nil {
		t.Fatal(err)
	}
	e.step()
	if n := len(e.cloud.LaunchCalls()); n != 2 {
		t.Fatalf("%d launch calls after the budget was raised, want 2", n)
	}
}
