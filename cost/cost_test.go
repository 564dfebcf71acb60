package cost

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/store"
)

var t0 = time.Date(2024, 1, 31, 22, 0, 0, 0, time.UTC)

func at(h float64) time.Time { return t0.Add(time.Duration(h * float64(time.Hour))) }

func ptr(t time.Time) *time.Time { return &t }

func inst(id string, price float64, launched, ended float64) *store.Instance {
	in := &store.Instance{ID: id, Backend: "aws", Region: "r", InstanceType: "m5.large", PricePerHour: price,
		CreatedAt: at(launched), LaunchedAt: ptr(at(launched)), CloudID: "i-" + id}
	if ended >= 0 {
		in.EndedAt = ptr(at(ended))
	}
	return in
}

func hold(instance, job, user string, from, to float64) *store.Hold {
	h := &store.Hold{InstanceID: instance, JobID: job, UserID: user, From: at(from)}
	if to >= 0 {
		h.To = ptr(at(to))
	}
	return h
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

func TestAttribute(t *testing.T) {
	t.Parallel()
	never := inst("never", 1, 0, 1)
	never.LaunchedAt, never.CloudID = nil, ""
	u := &store.Usage{
		Instances: []*store.Instance{inst("a", 2, 0, 5), never, inst("up", 1, 3, -1)},
		Holds: []*store.Hold{
			hold("a", "j1", "alice", 1, 2),
			hold("a", "j2", "bob", 1.5, 3), // overlaps j1: only from 2 is j2's
			hold("a", "j3", "carol", 4, 9), // runs past the instance's end
			hold("up", "j4", "dave", 3, -1),
		},
	}
	now := at(6)
	segs := Attribute(u, time.Time{}, now, now)
	by := func(key string, job bool) float64 {
		var h float64
		for _, s := range segs {
			if (s.UserID == key || s.JobID == key) && job == !s.Idle {
				h += s.Hours()
			}
		}
		return h
	}
	for _, c := range []struct {
		key  string
		job  bool
		want float64
	}{
		{"j1", true, 1}, {"j2", true, 1}, {"j3", true, 1}, {"j4", true, 3},
		{"bob", false, 1}, // idle 3-4 after bob's job
		{"alice", false, 1},
	} {
		if got := by(c.key, c.job); !near(got, c.want) {
			t.Errorf("%s (job %v): %v h, want %v", c.key, c.job, got, c.want)
		}
	}
	for _, s := range segs {
		if s.UserID == "" {
			t.Errorf("segment %+v charged to nobody", s)
		}
	}
	rows, total := Group(segs, api.UsageByDay, func(id string) string { return id })
	if len(rows) != 2 || rows[0].Key != "2024-01-31" || rows[1].Key != "2024-02-01" {
		t.Fatalf("days %+v", rows)
	}
	// Instance a: 5 h at 2; up: 3 h at 1; never: nothing.
	if !near(total.Cost, 13) || !near(rows[0].InstanceHours, 2) || !near(total.IdleCost, 2*2) {
		t.Errorf("total %+v, days %+v", total, rows)
	}
	holds := Holds(segs)
	if hs := holds["j1"]; len(hs) != 1 || !near(hs[0].Hours, 1) || hs[0].PurchaseType != api.PurchaseOnDemand {
		t.Errorf("j1 holds %+v; want one of 1 h", hs)
	}
	if hs := holds["j4"]; len(hs) != 1 || !near(hs[0].Hours, 3) || !hs[0].From.Equal(at(3)) {
		t.Errorf("j4 holds %+v; want one of 3 h across midnight and the month", hs)
	}
	d := Daily(segs, at(-1), at(4), api.UsageByInstanceType, nil)
	if len(d.Days) != 2 || len(d.Keys) != 1 || !near(d.Days[0].Parts["m5.large"]+d.Days[1].Parts["m5.large"], d.Days[0].Cost+d.Days[1].Cost) {
		t.Errorf("daily %+v", d)
	}
}

// TestAttributeAddsUp: over random instances and holds, the segments of
// an instance cover exactly its charged time within the window, once,
// each within one UTC day.
func TestAttributeAddsUp(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		var u store.Usage
		n := 1 + r.IntN(3)
		for i := range n {
			start := r.Float64() * 48
			end := -1.0
			if r.IntN(4) > 0 {
				end = start + r.Float64()*30
			}
			id := string(rune('a' + i))
			u.Instances = append(u.Instances, inst(id, 1, start, end))
			for j := range r.IntN(4) {
				from := start - 2 + r.Float64()*34
				to := -1.0
				if r.IntN(3) > 0 {
					to = from + r.Float64()*10
				}
				u.Holds = append(u.Holds, hold(id, id+string(rune('0'+j)), "u", from, to))
			}
		}
		from, to := at(r.Float64()*40), at(40+r.Float64()*40)
		now := at(80)
		segs := Attribute(&u, from, to, now)
		got := map[string]float64{}
		for _, s := range segs {
			if !s.From.Before(s.To) || s.From.Before(from) || s.To.After(to) || s.Day() != s.To.Add(-time.Nanosecond).UTC().Format(time.DateOnly) {
				t.Fatalf("segment %+v outside the window [%v, %v) or its day", s, from, to)
			}
			got[s.InstanceID] += s.Hours()
		}
		for _, in := range u.Instances {
			a, b, _ := Charged(in, now)
			a, b = maxTime(a, from), minTime(b, to)
			want := math.Max(b.Sub(a).Hours(), 0)
			if !near(got[in.ID], want) {
				t.Fatalf("instance %s: %v h of segments, want %v", in.ID, got[in.ID], want)
			}
		}
	}
}

func TestSeries(t *testing.T) {
	t.Parallel()
	a, b := inst("a", 1, 1, 3), inst("b", 1, 2, -1)
	changes := []*store.LimitChange{
		{Backend: "aws", Region: "r", InstanceType: "m5.large", Max: 2, At: at(0)},
		{Backend: "aws", Region: "r", InstanceType: "m5.large", Max: 1, At: at(2.5)},
	}
	s := Series([]*store.Instance{a, b}, changes, at(0.5), at(10))
	if len(s) != 1 {
		t.Fatalf("series %+v", s)
	}
	vals := func(ss []api.Step) (out []int) {
		for _, st := range ss {
			out = append(out, st.Value)
		}
		return out
	}
	if got := vals(s[0].Running); len(got) != 4 || got[0] != 0 || got[1] != 1 || got[2] != 2 || got[3] != 1 {
		t.Errorf("running %v, want 0 1 2 1", got)
	}
	if got := vals(s[0].Max); len(got) != 2 || got[0] != 2 || got[1] != 1 || !s[0].Max[1].At.Equal(at(2.5)) {
		t.Errorf("max %+v, want 2 then 1 at 2.5 h", s[0].Max)
	}
}
