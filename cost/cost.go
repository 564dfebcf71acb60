// Package cost computes what on-demand instances cost and whom to charge,
// from the store's records (store.Usage): pure functions, no I/O.
//
// The method (docs/cost.md):
//
//   - An instance is charged from its launch (its cloud ID recorded) to its
//     end (terminated or gone), or to now while it is up, at the price
//     recorded when it was launched (the spot price then, for spot). An
//     instance the cloud never launched costs nothing.
//   - Each attempt of a job holds its instance from its claim to its end;
//     that time is the job's, clipped to the instance's charged time.
//   - The rest is idle: charged to the user of the job that held the
//     instance just before; idle time before any job (booting, or an
//     instance that never got one) to the user it was launched for, else
//     its first job's user, else to nobody ("").
//   - Every stretch is split at midnight UTC, so that days and months add
//     up exactly.
//
// Prices are list prices and time is the server's record: an estimate of
// the cloud's bill, which stays the truth.
package cost

import (
	"slices"
	"sort"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/store"
)

// Segment is a stretch of one instance's time within one UTC day, held by
// one attempt of a job or idle.
type Segment struct {
	InstanceID   string
	LimitID      string
	Backend      string
	Region       string
	InstanceType string
	Spot         bool
	PricePerHour float64
	// UserID is who is charged; "" for nobody.
	UserID string
	Idle   bool
	// The job's attempt; empty when Idle.
	JobID    string
	RunID    string
	RunName  string
	Workflow string
	Attempt  int
	From, To time.Time
}

// Hours is the segment's length in hours.
func (s Segment) Hours() float64 { return s.To.Sub(s.From).Hours() }

// Cost is the segment's price times its length.
func (s Segment) Cost() float64 { return s.PricePerHour * s.Hours() }

// Day is the segment's day, YYYY-MM-DD in UTC.
func (s Segment) Day() string { return s.From.UTC().Format(time.DateOnly) }

// Purchase is api.PurchaseSpot or api.PurchaseOnDemand.
func (s Segment) Purchase() string { return purchase(s.Spot) }

// LimitKey names the segment's limit: backend/region/type/purchase.
func (s Segment) LimitKey() string {
	return LimitKey(s.Backend, s.Region, s.InstanceType, s.Spot)
}

// LimitKey names a limit by its key: backend/region/type/purchase.
func LimitKey(backend, region, instanceType string, spot bool) string {
	return backend + "/" + region + "/" + instanceType + "/" + purchase(spot)
}

func purchase(spot bool) string {
	if spot {
		return api.PurchaseSpot
	}
	return api.PurchaseOnDemand
}

// Charged is the stretch of time an instance is charged for, up to now;
// ok is false when the cloud never launched it.
func Charged(in *store.Instance, now time.Time) (from, to time.Time, ok bool) {
	switch {
	case in.LaunchedAt != nil:
		from = *in.LaunchedAt
	case in.RegisteredAt != nil:
		from = *in.RegisteredAt
	case in.CloudID != "":
		from = in.CreatedAt
	default:
		return time.Time{}, time.Time{}, false
	}
	to = now
	if in.EndedAt != nil {
		to = *in.EndedAt
	}
	if to.Before(from) {
		to = from
	}
	return from, to, true
}

// Attribute splits the time of u's instances within [from, to) into
// segments, as the package's doc says; now is the time of the report (the
// end of what is still going on). Segments come by instance, in time order.
func Attribute(u *store.Usage, from, to, now time.Time) []Segment {
	holds := map[string][]*store.Hold{}
	for _, h := range u.Holds {
		holds[h.InstanceID] = append(holds[h.InstanceID], h)
	}
	var out []Segment
	for _, in := range u.Instances {
		out = append(out, instanceSegments(in, holds[in.ID], from, to, now)...)
	}
	return out
}

// instanceSegments attributes one instance's time within [from, to).
func instanceSegments(in *store.Instance, hs []*store.Hold, from, to, now time.Time) []Segment {
	start, end, ok := Charged(in, now)
	if !ok {
		return nil
	}
	hs = slices.Clone(hs)
	slices.SortFunc(hs, func(a, b *store.Hold) int { return a.From.Compare(b.From) })
	base := Segment{
		InstanceID: in.ID, LimitID: in.LimitID, Backend: in.Backend, Region: in.Region,
		InstanceType: in.InstanceType, Spot: in.Spot, PricePerHour: in.PricePerHour,
	}
	// Idle before any job goes to the user it was launched for.
	idleUser := in.LaunchUserID
	if idleUser == "" && len(hs) > 0 {
		idleUser = hs[0].UserID
	}
	var out []Segment
	emit := func(s Segment, a, b time.Time) {
		a, b = maxTime(a, start, from), minTime(b, end, to)
		for a.Before(b) {
			next := minTime(b, nextMidnight(a))
			s.From, s.To = a, next
			out = append(out, s)
			a = next
		}
	}
	cur := start
	for _, h := range hs {
		hFrom := maxTime(h.From, cur)
		hTo := now
		if h.To != nil {
			hTo = *h.To
		}
		hTo = minTime(hTo, end)
		if !hTo.After(hFrom) {
			continue // within an earlier hold, or outside the charged time
		}
		if hFrom.After(cur) {
			idle := base
			idle.Idle, idle.UserID = true, idleUser
			emit(idle, cur, hFrom)
		}
		s := base
		s.UserID, s.JobID, s.RunID, s.RunName, s.Workflow, s.Attempt =
			h.UserID, h.JobID, h.RunID, h.RunName, h.Workflow, h.Attempt
		emit(s, hFrom, hTo)
		cur = hTo
		idleUser = h.UserID
	}
	if end.After(cur) {
		idle := base
		idle.Idle, idle.UserID = true, idleUser
		emit(idle, cur, end)
	}
	return out
}

func nextMidnight(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month(), t.Day()+1, 0, 0, 0, 0, time.UTC)
}

func maxTime(t time.Time, ts ...time.Time) time.Time {
	for _, u := range ts {
		if u.After(t) {
			t = u
		}
	}
	return t
}

func minTime(t time.Time, ts ...time.Time) time.Time {
	for _, u := range ts {
		if u.Before(t) {
			t = u
		}
	}
	return t
}

// add adds a segment to a row.
func add(r *api.UsageRow, s Segment) {
	h, c := s.Hours(), s.Cost()
	r.InstanceHours += h
	r.Cost += c
	if s.Idle {
		r.IdleHours += h
		r.IdleCost += c
	} else {
		r.JobHours += h
	}
}

// Key is the group of a segment by api.UsageByUser, ByLimit,
// ByInstanceType or ByDay; userName names user IDs.
func Key(s Segment, by string, userName func(string) string) string {
	switch by {
	case api.UsageByLimit:
		return s.LimitKey()
	case api.UsageByInstanceType:
		return s.InstanceType
	case api.UsageByDay:
		return s.Day()
	}
	if s.UserID == "" {
		return ""
	}
	return userName(s.UserID)
}

// Group adds the segments up by by: rows with the largest cost first
// (by day, in date order), and their total (Key "total").
func Group(segs []Segment, by string, userName func(string) string) (rows []api.UsageRow, total api.UsageRow) {
	total.Key = "total"
	idx := map[string]int{}
	for _, s := range segs {
		k := Key(s, by, userName)
		i, ok := idx[k]
		if !ok {
			i = len(rows)
			idx[k] = i
			rows = append(rows, api.UsageRow{Key: k})
		}
		add(&rows[i], s)
		add(&total, s)
	}
	sort.SliceStable(rows, func(i, j int) bool {
		if by == api.UsageByDay {
			return rows[i].Key < rows[j].Key
		}
		if rows[i].Cost != rows[j].Cost {
			return rows[i].Cost > rows[j].Cost
		}
		return rows[i].Key < rows[j].Key
	})
	return rows, total
}

// Daily is the cost per day of [from, to) stacked by user or instance
// type; every day is present.
func Daily(segs []Segment, from, to time.Time, stack string, userName func(string) string) api.UsageDaily {
	if stack != api.UsageByInstanceType {
		stack = api.UsageByUser
	}
	out := api.UsageDaily{From: from, To: to, Stack: stack, Currency: api.Currency}
	idx := map[string]int{}
	for d := dayStart(from); d.Before(to); d = d.AddDate(0, 0, 1) {
		idx[d.Format(time.DateOnly)] = len(out.Days)
		out.Days = append(out.Days, api.DayCost{Day: d.Format(time.DateOnly), Parts: map[string]float64{}})
	}
	totals := map[string]float64{}
	for _, s := range segs {
		i, ok := idx[s.Day()]
		if !ok {
			continue
		}
		k := Key(s, stack, userName)
		c := s.Cost()
		d := &out.Days[i]
		d.Cost += c
		if s.Idle {
			d.IdleCost += c
		}
		d.Parts[k] += c
		totals[k] += c
	}
	for k := range totals {
		out.Keys = append(out.Keys, k)
	}
	sort.Slice(out.Keys, func(i, j int) bool {
		a, b := out.Keys[i], out.Keys[j]
		if totals[a] != totals[b] {
			return totals[a] > totals[b]
		}
		return a < b
	})
	return out
}

func dayStart(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
}

// MonthStart is the start of t's calendar month in UTC.
func MonthStart(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
}

// Total is the cost of the segments.
func Total(segs []Segment) float64 {
	var c float64
	for _, s := range segs {
		c += s.Cost()
	}
	return c
}

// JobCosts adds up the segments held by jobs, by job ID.
func JobCosts(segs []Segment) map[string]*api.Cost {
	out := map[string]*api.Cost{}
	for _, s := range segs {
		if s.Idle {
			continue
		}
		c := out[s.JobID]
		if c == nil {
			c = &api.Cost{Currency: api.Currency}
			out[s.JobID] = c
		}
		c.Cost += s.Cost()
		c.InstanceHours += s.Hours()
	}
	return out
}

// Holds are the jobs' segments joined back into one hold per attempt
// (their days put together), by job ID, in time order.
func Holds(segs []Segment) map[string][]api.Hold {
	out := map[string][]api.Hold{}
	for _, s := range segs {
		if s.Idle {
			continue
		}
		hs := out[s.JobID]
		if n := len(hs); n > 0 && hs[n-1].InstanceID == s.InstanceID && hs[n-1].Attempt == s.Attempt &&
			hs[n-1].To != nil && hs[n-1].To.Equal(s.From) {
			to := s.To
			hs[n-1].To = &to
			hs[n-1].Hours += s.Hours()
			hs[n-1].Cost += s.Cost()
			continue
		}
		to := s.To
		out[s.JobID] = append(hs, api.Hold{
			JobID: s.JobID, Workflow: s.Workflow, Attempt: s.Attempt, InstanceID: s.InstanceID,
			Backend: s.Backend, Region: s.Region, InstanceType: s.InstanceType, PurchaseType: s.Purchase(),
			PricePerHour: s.PricePerHour, From: s.From, To: &to, Hours: s.Hours(), Cost: s.Cost(),
		})
	}
	return out
}
