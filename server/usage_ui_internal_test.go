package server

import (
	"math"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
)

// TestDailyBarChartKeepsTheFigures: each day's bar is the day's parts, in
// the order of the keys, and adds up to the day's cost.
func TestDailyBarChartKeepsTheFigures(t *testing.T) {
	t.Parallel()
	d := &api.UsageDaily{Stack: api.UsageByUser, Currency: "USD", Keys: []string{"alice", ""},
		From: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), To: time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC),
		Days: []api.DayCost{
			{Day: "2026-12-01", Cost: 1.5, Parts: map[string]float64{"alice": 1, "": 0.5}},
			{Day: "2026-12-02", Cost: 0},
		}}
	c := dailyBarChart(d, 400)
	if len(c.Categories) != 2 || c.Categories[0] != "Dec 1" || len(c.Series) != 2 || c.Series[1].Name != "(no job)" {
		t.Fatalf("chart %+v", c)
	}
	for i, total := range c.Totals() {
		if math.Abs(total-d.Days[i].Cost) > 1e-9 {
			t.Errorf("day %s: bar %v, cost %v", d.Days[i].Day, total, d.Days[i].Cost)
		}
	}
}

// TestInstancesStepChartKeepsTheSteps: a panel per limit, its series the
// limit's steps.
func TestInstancesStepChartKeepsTheSteps(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	ser := &api.InstanceSeries{From: t0, To: t0.Add(time.Hour), Limits: []api.LimitSeries{{
		Key: "local/local/local.small/on-demand", Backend: "local", Region: "local", InstanceType: "local.small", PurchaseType: "on-demand",
		Running: []api.Step{{At: t0, Value: 0}, {At: t0.Add(time.Minute), Value: 2}},
		Max:     []api.Step{{At: t0, Value: 3}, {At: t0.Add(30 * time.Minute), Value: 1}},
	}}}
	c := instancesStepChart(ser, 500)
	if len(c.Panels) != 1 || c.Panels[0].Key != ser.Limits[0].Key || len(c.Panels[0].Series) != 2 {
		t.Fatalf("panels %+v", c.Panels)
	}
	for i, want := range [][]api.Step{ser.Limits[0].Running, ser.Limits[0].Max} {
		got := c.Panels[0].Series[i].Points
		if len(got) != len(want) {
			t.Fatalf("series %d: %v, want %v", i, got, want)
		}
		for j := range want {
			if !got[j].T.Equal(want[j].At) || got[j].V != float64(want[j].Value) {
				t.Errorf("series %d point %d: %v, want %v", i, j, got[j], want[j])
			}
		}
	}
}
