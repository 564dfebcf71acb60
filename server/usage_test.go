package server_test

import (
	"context"
	"io"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/client"
	"github.com/dstackai/dstack/server/servertest"
	"github.com/dstackai/dstack/store"
)

// usageEnv is a server with two members, alice and bob, each with a run
// that held an on-demand instance that has ended (the autoscaler leaves
// ended instances alone):
//
//   - alice's instance, 1.00/h, up from 3 h ago to 1 h ago; her job held it
//     for its last hour: 1.00 for the job, 1.00 idle;
//   - bob's instance, 0.50/h, held by his job from 2 h ago to 30 min ago:
//     0.75.
type usageEnv struct {
	srv            *servertest.Server
	admin          *client.Client
	alice, bob     *client.Client
	aliceRun, bRun string
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-6 }

func newUsageEnv(t *testing.T) *usageEnv {
	t.Helper()
	srv := servertest.Start(t)
	ctx := context.Background()
	e := &usageEnv{srv: srv, admin: srv.Client()}
	member := func(name string) (*client.Client, string) {
		u, err := e.admin.UserCreate(ctx, api.UserCreateRequest{Name: name})
		if err != nil {
			t.Fatalf("add %s: %v", name, err)
		}
		c, err := client.New(srv.URL, u.Token)
		if err != nil {
			t.Fatal(err)
		}
		su, err := srv.Store().UserGetByName(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		return c, su.ID
	}
	var aliceID, bobID string
	e.alice, aliceID = member("alice")
	e.bob, bobID = member("bob")
	st := srv.Store()
	now := time.Now()
	l, err := st.LimitPut(ctx, store.LimitPutParams{ID: "limit-1", UserID: aliceID, Backend: "local", Region: "local",
		InstanceType: "local.small", Max: 2, Now: now.Add(-4 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	hold := func(c *client.Client, userID, id string, price float64, launched, claimed, done time.Time) string {
		run, err := c.RunSubmit(ctx, api.RunSubmitRequest{CodeID: uploadCode(t, c), Workflow: "train",
			Jobs: []api.JobSpec{{Workflow: "train", Provider: "bash", Commands: []string{"true"}}}})
		if err != nil {
			t.Fatalf("submit: %v", err)
		}
		if _, err := st.InstanceCreate(ctx, store.InstanceCreateParams{LimitID: l.Limit.ID, PricePerHour: price, LaunchKey: id,
			Instances: []store.InstanceCreate{{ID: id, JobID: run.Jobs[0].ID, JoinTokenHash: "join-" + id}}, Now: launched}); err != nil {
			t.Fatal(err)
		}
		if _, err := st.InstanceSetLaunched(ctx, store.InstanceSetLaunchedParams{CloudIDs: map[string]string{id: "c-" + id}, Now: launched}); err != nil {
			t.Fatal(err)
		}
		_, rn, err := st.InstanceRegister(ctx, store.InstanceRegisterParams{JoinTokenHash: "join-" + id, Runner: store.RunnerCreateParams{
			ID: "runner-" + id, Name: "runner-" + id, Hostname: id, Executor: "shell", Version: "1",
			Resources: api.HostResources{CPUs: 2, MemoryMiB: 4096}, TokenHash: "token-" + id, TokenExpiresAt: now.Add(time.Hour), Now: launched,
		}})
		if err != nil {
			t.Fatal(err)
		}
		j, err := st.JobClaimNext(ctx, store.JobClaimNextParams{RunnerID: rn.ID, UserID: rn.UserID, Free: rn.Resources, Now: claimed})
		if err != nil || j.UserID != userID {
			t.Fatalf("claim: %v, %v", j, err)
		}
		if _, err := st.JobSetStatus(ctx, store.JobSetStatusParams{ID: j.ID, RunnerID: rn.ID, Lease: j.Lease, Status: api.StatusDone, Now: done}); err != nil {
			t.Fatal(err)
		}
		if _, _, err := st.InstanceSetState(ctx, store.InstanceSetStateParams{ID: id, State: store.InstanceTerminated, Reason: "idle_timeout", MaxAttempts: 3, Now: done}); err != nil {
			t.Fatal(err)
		}
		return run.Name
	}
	e.aliceRun = hold(e.alice, aliceID, "inst-alice", 1, now.Add(-3*time.Hour), now.Add(-2*time.Hour), now.Add(-time.Hour))
	e.bRun = hold(e.bob, bobID, "inst-bob", 0.5, now.Add(-2*time.Hour), now.Add(-2*time.Hour), now.Add(-30*time.Minute))
	return e
}

func TestUsageMembersSeeTheirOwn(t *testing.T) {
	t.Parallel()
	e := newUsageEnv(t)
	ctx := context.Background()

	mine, err := e.alice.Usage(ctx, client.UsageQuery{Since: "1d"})
	if err != nil {
		t.Fatalf("alice's usage: %v", err)
	}
	if mine.All || len(mine.Rows) != 1 || mine.Rows[0].Key != "alice" || !near(mine.Total.Cost, 2) || !near(mine.Total.IdleCost, 1) ||
		mine.Currency != api.Currency {
		t.Fatalf("alice's usage: %+v; want only hers: 2.00, 1.00 of it idle", mine)
	}
	all, err := e.admin.Usage(ctx, client.UsageQuery{Since: "1d", By: api.UsageByUser})
	if err != nil {
		t.Fatalf("admin's usage: %v", err)
	}
	if !all.All || len(all.Rows) != 2 || all.Rows[0].Key != "alice" || all.Rows[1].Key != "bob" || !near(all.Rows[1].Cost, 0.75) ||
		!near(all.Total.Cost, 2.75) || !near(all.Total.InstanceHours, 3.5) {
		t.Fatalf("admin's usage: %+v; want alice 2.00 and bob 0.75", all)
	}
	byType, err := e.bob.Usage(ctx, client.UsageQuery{Since: "1d", By: api.UsageByInstanceType})
	if err != nil || len(byType.Rows) != 1 || byType.Rows[0].Key != "local.small" || !near(byType.Total.Cost, 0.75) {
		t.Fatalf("bob's usage by type: %+v, %v; want his 0.75 on local.small", byType, err)
	}
	daily, err := e.admin.UsageDaily(ctx, client.UsageQuery{Since: "2d", By: api.UsageByUser})
	if err != nil || len(daily.Days) < 2 || len(daily.Keys) != 2 {
		t.Fatalf("daily: %+v, %v; want every day and two users", daily, err)
	}
	var sum float64
	for _, d := range daily.Days {
		sum += d.Parts["alice"] + d.Parts["bob"]
	}
	if !near(sum, 2.75) {
		t.Errorf("daily parts add up to %v, want 2.75", sum)
	}
	series, err := e.bob.UsageInstances(ctx, client.UsageQuery{Since: "1d"})
	if err != nil || len(series.Limits) != 1 || len(series.Limits[0].Max) != 2 || series.Limits[0].Max[0].Value != 0 ||
		series.Limits[0].Max[1].Value != 2 {
		t.Fatalf("instances over time: %+v, %v; want the limit from 0 to 2 when it was set", series, err)
	}
	peak := 0
	for _, st := range series.Limits[0].Running {
		peak = max(peak, st.Value)
	}
	if peak != 2 || series.Limits[0].Running[len(series.Limits[0].Running)-1].Value != 0 {
		t.Errorf("running steps %+v; want up to 2 (both instances from 2 h to 1 h ago), then 0", series.Limits[0].Running)
	}
	_, err = e.alice.Usage(ctx, client.UsageQuery{Since: "1d", By: "colour"})
	apiErr(t, "usage by colour", err, api.CodeInvalid, "by=")
	_, err = e.alice.Usage(ctx, client.UsageQuery{Since: "1y"})
	apiErr(t, "usage since 1y", err, api.CodeInvalid, "since")

	// A run's cost: in the list (dstack ps), in the run, and job by job.
	runs, err := e.alice.RunList(ctx, true)
	if err != nil || len(runs) != 1 || runs[0].Cost == nil || !near(runs[0].Cost.Cost, 1) || runs[0].Jobs[0].Cost == nil {
		t.Fatalf("alice's runs: %+v, %v; want her run at 1.00", runs, err)
	}
	rc, err := e.alice.RunCost(ctx, e.aliceRun)
	if err != nil || !near(rc.Cost.Cost, 1) || len(rc.Jobs) != 1 || len(rc.Jobs[0].Holds) != 1 ||
		rc.Jobs[0].Holds[0].PricePerHour != 1 || !near(rc.Jobs[0].Holds[0].Hours, 1) {
		t.Fatalf("alice's run cost: %+v, %v; want one hour at 1.00", rc, err)
	}
	_, err = e.bob.RunCost(ctx, e.aliceRun)
	apiErr(t, "bob reads alice's run cost", err, api.CodeNotFound)
	if rc, err := e.admin.RunCost(ctx, e.bRun); err != nil || !near(rc.Cost.Cost, 0.75) {
		t.Fatalf("admin reads bob's run cost: %+v, %v", rc, err)
	}
}

func TestBudget(t *testing.T) {
	t.Parallel()
	e := newUsageEnv(t)
	ctx := context.Background()
	_, err := e.alice.BudgetSet(ctx, 1)
	apiErr(t, "a member sets the budget", err, api.CodeForbidden)
	b, err := e.admin.BudgetSet(ctx, 100)
	if err != nil || b.Monthly != 100 || b.Reached {
		t.Fatalf("budget 100: %+v, %v", b, err)
	}
	// The month so far cost 2.75 unless it began within the last 3 h.
	if time.Now().UTC().Sub(time.Now().UTC().Truncate(24*time.Hour)) < 3*time.Hour && time.Now().UTC().Day() == 1 {
		t.Skip("the month began within the instances' time")
	}
	b, err = e.admin.BudgetSet(ctx, 2)
	if err != nil || !b.Reached || !near(b.MonthCost, 2.75) || !strings.Contains(b.Reason, "budget of 2.00 USD is spent") {
		t.Fatalf("budget 2: %+v, %v; want it reached at 2.75", b, err)
	}
	st, err := e.bob.OnDemandGet(ctx)
	if err != nil || st.Budget == nil || !st.Budget.Reached {
		t.Fatalf("on-demand status: %+v, %v; want the budget reached", st, err)
	}
	if b, err := e.admin.BudgetSet(ctx, 0); err != nil || b.Monthly != 0 || b.Reached {
		t.Fatalf("budget removed: %+v, %v", b, err)
	}
	if st, err := e.bob.OnDemandGet(ctx); err != nil || st.Budget != nil {
		t.Fatalf("on-demand status without a budget: %+v, %v", st.Budget, err)
	}
}

func TestCostMetrics(t *testing.T) {
	t.Parallel()
	e := newUsageEnv(t)
	resp, err := http.Get(e.srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	labels := `{backend="local",purchase="on-demand",region="local",type="local.small"}`
	for _, want := range []string{
		"dstack_instance_cost_total" + labels + " 2.75",
		"dstack_instances_running" + labels + " 0",
		"dstack_limit_maximum" + labels + " 2",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
