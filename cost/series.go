package cost

import (
	"sort"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/store"
)

// Series is each limit's count of instances over [from, to) against its
// maximum, as steps. An instance counts against its limit from its record
// (launching) to its end, as InstanceCreate counts it. Limits are joined by
// key (backend/region/type/purchase), so a limit deleted and set again is
// one series. changes are LimitHistoryList's. A limit appears when it had
// a maximum or an instance in the window; by key.
func Series(instances []*store.Instance, changes []*store.LimitChange, from, to time.Time) []api.LimitSeries {
	type event struct {
		at    time.Time
		delta int // an instance's +1 or -1
		max   int // a limit change's maximum, when isMax
		isMax bool
	}
	byKey := map[string]*api.LimitSeries{}
	events := map[string][]event{}
	get := func(backend, region, typ string, spot bool) string {
		k := LimitKey(backend, region, typ, spot)
		if byKey[k] == nil {
			byKey[k] = &api.LimitSeries{Key: k, Backend: backend, Region: region, InstanceType: typ,
				PurchaseType: purchase(spot)}
		}
		return k
	}
	for _, in := range instances {
		k := get(in.Backend, in.Region, in.InstanceType, in.Spot)
		events[k] = append(events[k], event{at: in.CreatedAt, delta: 1})
		if in.EndedAt != nil {
			events[k] = append(events[k], event{at: *in.EndedAt, delta: -1})
		}
	}
	for _, c := range changes {
		k := get(c.Backend, c.Region, c.InstanceType, c.Spot)
		events[k] = append(events[k], event{at: c.At, max: c.Max, isMax: true})
	}
	out := make([]api.LimitSeries, 0, len(byKey))
	for k, ls := range byKey {
		evs := events[k]
		sort.SliceStable(evs, func(i, j int) bool { return evs[i].at.Before(evs[j].at) })
		running, maximum := 0, 0
		i := 0
		for ; i < len(evs) && !evs[i].at.After(from); i++ {
			if evs[i].isMax {
				maximum = evs[i].max
			} else {
				running += evs[i].delta
			}
		}
		ls.Running = []api.Step{{At: from, Value: running}}
		ls.Max = []api.Step{{At: from, Value: maximum}}
		for ; i < len(evs) && evs[i].at.Before(to); i++ {
			e := evs[i]
			if e.isMax {
				maximum = e.max
				ls.Max = appendStep(ls.Max, e.at, maximum)
			} else {
				running += e.delta
				ls.Running = appendStep(ls.Running, e.at, running)
			}
		}
		out = append(out, *ls)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

// appendStep adds a step, replacing the last one when it is at the same
// time and dropping one that changes nothing.
func appendStep(steps []api.Step, at time.Time, v int) []api.Step {
	n := len(steps)
	if steps[n-1].At.Equal(at) {
		steps[n-1].Value = v
		if n > 1 && steps[n-2].Value == v {
			return steps[:n-1]
		}
		return steps
	}
	if steps[n-1].Value == v {
		return steps
	}
	return append(steps, api.Step{At: at, Value: v})
}
