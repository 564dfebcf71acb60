package storetest

import (
	"math"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/cost"
	"github.com/dstackai/dstack/store"
)

// clock sets the fixture's clock so that the next tick is at t.
func (f *fixture) clock(t time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = t.Add(-time.Second)
}

// launchAt records one instance of l at a price for job jobID ("" for
// none) and, unless unlaunched, its cloud ID a second later.
func (f *fixture) launchAt(l *store.Limit, price float64, at time.Time, jobID string, launched bool) *store.Instance {
	f.t.Helper()
	f.clock(at)
	p := f.instanceParams(l, 1)
	p.PricePerHour = price
	p.Instances[0].JobID = jobID
	ins, err := f.s.InstanceCreate(f.ctx, p)
	if err != nil {
		f.t.Fatalf("InstanceCreate: %v", err)
	}
	in := ins[0]
	if launched {
		got, err := f.s.InstanceSetLaunched(f.ctx, store.InstanceSetLaunchedParams{
			CloudIDs: map[string]string{in.ID: "i-" + in.ID}, Now: f.tick()})
		if err != nil {
			f.t.Fatalf("InstanceSetLaunched: %v", err)
		}
		in = got[0]
	}
	return in
}

// endAt moves an instance to st at t.
func (f *fixture) endAt(in *store.Instance, st store.InstanceState, t time.Time) []*store.Job {
	f.t.Helper()
	f.clock(t)
	_, jobs := f.setState(in, st)
	return jobs
}

func date(month time.Month, day, hour, minute int) time.Time {
	return time.Date(2024, month, day, hour, minute, 0, 0, time.UTC)
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-6 }

var usageTests = []test{
	{"runs across midnight and months, spot and on-demand, idle instances", func(t *testing.T, open Open) {
		f := setup(t, open)
		alice, bob := f.user(), f.user()
		names := map[string]string{alice.ID: "alice", bob.ID: "bob"}
		userName := func(id string) string { return names[id] }
		onDemand := f.limit(alice, 5)
		sp := f.limitParams(alice, 5)
		sp.Spot = true
		spotRes, err := f.s.LimitPut(f.ctx, sp)
		if err != nil {
			t.Fatalf("LimitPut: %v", err)
		}
		spot := spotRes.Limit

		// Alice's run holds an on-demand instance from 22:10 on May 31 to
		// 01:10 on June 1: three hours across midnight and a month.
		runA := f.run(alice, spec("train"))
		jobA := runA.Jobs[0]
		i1 := f.launchAt(onDemand, 0.5, date(5, 31, 22, 0), jobA.ID, true) // launched 22:00:01
		f.clock(date(5, 31, 22, 5))
		_, rn1 := f.register(i1)
		f.clock(date(5, 31, 22, 10))
		ja := f.claim(rn1)
		if ja.ID != jobA.ID {
			t.Fatalf("claimed %s, want %s", ja.ID, jobA.ID)
		}
		ja = f.set(ja, api.StatusRunning)
		f.clock(date(6, 1, 1, 10))
		f.set(ja, api.StatusDone)
		f.endAt(i1, store.InstanceTerminated, date(6, 1, 1, 20))

		// Bob's job holds a spot instance from 23:05 to 23:30, when the
		// instance is reclaimed and the job requeued; a self-hosted runner
		// (free) finishes it.
		runB := f.run(bob, spec("eval"))
		i2 := f.launchAt(spot, 0.1, date(5, 31, 23, 0), runB.Jobs[0].ID, true) // launched 23:00:01
		_, rn2 := f.register(i2)
		f.clock(date(5, 31, 23, 5))
		jb := f.claim(rn2)
		f.set(jb, api.StatusRunning)
		requeued := f.endAt(i2, store.InstanceTerminating, date(5, 31, 23, 30))
		if len(requeued) != 1 || requeued[0].Status != api.StatusPending {
			t.Fatalf("terminating the spot instance changed %v; want bob's job requeued", requeued)
		}
		f.endAt(i2, store.InstanceTerminated, date(5, 31, 23, 31))
		f.clock(date(5, 31, 23, 40))
		own := f.runner(bob, cpuHost)
		f.finish(f.claim(own), api.StatusDone)

		// An instance launched for Alice that never got a job; one the
		// cloud never launched.
		i3 := f.launchAt(onDemand, 0.5, date(5, 31, 22, 30), jobA.ID, true)
		f.endAt(i3, store.InstanceTerminated, date(5, 31, 22, 40))
		i4 := f.launchAt(onDemand, 0.5, date(5, 31, 22, 50), "", false)
		f.endAt(i4, store.InstanceGone, date(5, 31, 22, 51))

		from, to, now := date(5, 31, 0, 0), date(6, 2, 0, 0), date(6, 2, 0, 0)
		u, err := f.s.UsageList(f.ctx, store.UsageListParams{From: from, To: to})
		if err != nil {
			t.Fatalf("UsageList: %v", err)
		}
		if len(u.Instances) != 4 || len(u.Holds) != 2 {
			t.Fatalf("UsageList: %d instances, %d holds; want 4 and 2", len(u.Instances), len(u.Holds))
		}
		segs := cost.Attribute(u, from, to, now)
		s := time.Second.Hours()
		want := map[string]api.UsageRow{
			// 3 h held, idle 22:00:01-22:10 and 01:10-01:20, and i3's 10 min
			// (less its launch second).
			"alice": {JobHours: 3, IdleHours: 10.0/60 - s + 10.0/60 + 10.0/60 - s},
			// 25 min held, idle 23:00:01-23:05 and 23:30-23:31.
			"bob": {JobHours: 25.0 / 60, IdleHours: 5.0/60 - s + 1.0/60},
		}
		rows, total := cost.Group(segs, api.UsageByUser, userName)
		if len(rows) != 2 {
			t.Fatalf("rows by user: %+v; want alice and bob", rows)
		}
		for _, r := range rows {
			w := want[r.Key]
			if !near(r.JobHours, w.JobHours) || !near(r.IdleHours, w.IdleHours) || !near(r.InstanceHours, w.JobHours+w.IdleHours) {
				t.Errorf("%s: job %.6f h, idle %.6f h; want %.6f, %.6f", r.Key, r.JobHours, r.IdleHours, w.JobHours, w.IdleHours)
			}
		}
		wantAlice := 0.5 * (want["alice"].JobHours + want["alice"].IdleHours)
		wantBob := 0.1 * (want["bob"].JobHours + want["bob"].IdleHours)
		if !near(total.Cost, wantAlice+wantBob) || !near(total.IdleCost, 0.5*want["alice"].IdleHours+0.1*want["bob"].IdleHours) {
			t.Errorf("total %+v; want cost %.6f", total, wantAlice+wantBob)
		}
		// Days split at midnight: June 1 has Alice's 1 h 10 min held and
		// 10 min idle.
		days, _ := cost.Group(segs, api.UsageByDay, userName)
		if len(days) != 2 || days[0].Key != "2024-05-31" || days[1].Key != "2024-06-01" {
			t.Fatalf("days %+v; want May 31 and June 1", days)
		}
		if !near(days[1].JobHours, 70.0/60) || !near(days[1].IdleHours, 10.0/60) || !near(days[0].Cost+days[1].Cost, total.Cost) {
			t.Errorf("June 1: %+v; want 70 min held, 10 min idle, days adding up to the total", days[1])
		}
		// A window of June alone sees only June's part.
		ju, err := f.s.UsageList(f.ctx, store.UsageListParams{From: date(6, 1, 0, 0), To: to})
		if err != nil {
			t.Fatalf("UsageList(June): %v", err)
		}
		if len(ju.Instances) != 1 || ju.Instances[0].ID != i1.ID {
			t.Fatalf("June's instances: %d; want only the one up across midnight", len(ju.Instances))
		}
		if _, jt := cost.Group(cost.Attribute(ju, date(6, 1, 0, 0), to, now), api.UsageByUser, userName); !near(jt.Cost, days[1].Cost) {
			t.Errorf("June's cost %.6f; want %.6f", jt.Cost, days[1].Cost)
		}
		// By purchase type: spot at its recorded price.
		types, _ := cost.Group(segs, api.UsageByLimit, userName)
		if len(types) != 2 || !near(types[1].Cost, wantBob) || types[1].Key != cost.LimitKey("aws", "eu-west-1", spot.InstanceType, true) {
			t.Errorf("by limit %+v; want the spot limit at %.6f", types, wantBob)
		}
		// A run's cost, through the record of the requeued attempt too.
		ru, err := f.s.UsageList(f.ctx, store.UsageListParams{RunIDs: []string{runA.ID, runB.ID}})
		if err != nil {
			t.Fatalf("UsageList(runs): %v", err)
		}
		jobs := cost.JobCosts(cost.Attribute(ru, time.Time{}, now, now))
		if c := jobs[jobA.ID]; c == nil || !near(c.Cost, 1.5) || !near(c.InstanceHours, 3) {
			t.Errorf("alice's job: %+v; want 3 h for 1.5", c)
		}
		if c := jobs[runB.Jobs[0].ID]; c == nil || !near(c.Cost, 0.1*25/60) {
			t.Errorf("bob's job: %+v; want its 25 min on spot", c)
		}
		// Deleting Alice's run keeps what its instance did.
		if _, err := f.deleteRun(store.RunDeleteParams{Name: runA.Name}); err != nil {
			t.Fatalf("RunDelete: %v", err)
		}
		after, err := f.s.UsageList(f.ctx, store.UsageListParams{From: from, To: to})
		if err != nil {
			t.Fatalf("UsageList: %v", err)
		}
		if _, t2 := cost.Group(cost.Attribute(after, from, to, now), api.UsageByUser, userName); !near(t2.Cost, total.Cost) || !near(t2.JobHours, total.JobHours) {
			t.Errorf("after the run's deletion: %+v; want %+v", t2, total)
		}
	}},
	{"limits' maximums and instances over time", func(t *testing.T, open Open) {
		f := setup(t, open)
		u := f.user()
		f.clock(date(5, 1, 10, 0))
		l := f.limit(u, 2)
		i1 := f.launchAt(l, 1, date(5, 1, 10, 5), "", true)
		f.launchAt(l, 1, date(5, 1, 10, 6), "", true)
		f.endAt(i1, store.InstanceTerminated, date(5, 1, 10, 20))
		f.clock(date(5, 1, 10, 30))
		p := f.limitParams(u, 3)
		p.InstanceType = l.InstanceType
		if _, err := f.s.LimitPut(f.ctx, p); err != nil {
			t.Fatalf("LimitPut: %v", err)
		}
		f.clock(date(5, 1, 11, 0))
		if _, err := f.s.LimitDelete(f.ctx, store.LimitDeleteParams{ID: l.ID, Now: f.tick()}); err != nil {
			t.Fatalf("LimitDelete: %v", err)
		}
		from, to := date(5, 1, 10, 1), date(5, 1, 12, 0)
		changes, err := f.s.LimitHistoryList(f.ctx, store.LimitHistoryListParams{From: from, To: to})
		if err != nil {
			t.Fatalf("LimitHistoryList: %v", err)
		}
		var maxes []int
		for _, c := range changes {
			maxes = append(maxes, c.Max)
		}
		if len(maxes) != 3 || maxes[0] != 2 || maxes[1] != 3 || maxes[2] != 0 {
			t.Fatalf("history %v; want 2 (before the window), 3, 0", maxes)
		}
		us, err := f.s.UsageList(f.ctx, store.UsageListParams{From: from, To: to})
		if err != nil {
			t.Fatalf("UsageList: %v", err)
		}
		series := cost.Series(us.Instances, changes, from, to)
		if len(series) != 1 {
			t.Fatalf("series %+v; want one limit", series)
		}
		steps := func(ss []api.Step) []int {
			var out []int
			for _, s := range ss {
				out = append(out, s.Value)
			}
			return out
		}
		if got := steps(series[0].Running); len(got) != 4 || got[0] != 0 || got[1] != 1 || got[2] != 2 || got[3] != 1 {
			t.Errorf("running %v; want 0, 1, 2, 1", got)
		}
		if got := steps(series[0].Max); len(got) != 3 || got[0] != 2 || got[1] != 3 || got[2] != 0 {
			t.Errorf("max %v; want 2, 3, 0", got)
		}
	}},
}
