package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/cost"
	"github.com/dstackai/dstack/store"
)

// The cost and usage API (docs/cost.md): what on-demand instances cost,
// by run, user, limit, instance type and day, the limits' instances over
// time, and the monthly budget. The figures come from package cost, over
// the store's records. A member sees their own usage, an admin everyone's.

func (s *Server) usageRoutes(rt *router) {
	p := api.PathPrefix
	rt.member("GET "+p+"/usage", s.handleUsage)
	rt.member("GET "+p+"/usage/daily", s.handleUsageDaily)
	rt.member("GET "+p+"/usage/instances", s.handleUsageInstances)
	rt.member("GET "+p+"/runs/{name}/cost", s.handleRunCost)
	rt.member("GET "+p+"/on-demand/budget", s.handleBudgetGet)
	rt.admin("PUT "+p+"/on-demand/budget", "set the on-demand budget", s.handleBudgetPut)
}

// defaultUsagePeriod is how far back a report goes when not told.
const defaultUsagePeriod = 30 * 24 * time.Hour

// usageWindow reads since= (a period back from now) or from= and to= (RFC
// 3339 times; to defaults to now).
func (s *Server) usageWindow(r *http.Request, def time.Duration) (from, to time.Time, err error) {
	q := r.URL.Query()
	now := s.cfg.Now()
	to = now
	if v := q.Get("to"); v != "" {
		if to, err = time.Parse(time.RFC3339, v); err != nil {
			return from, to, invalid("to=%q: give a time such as 2024-05-01T00:00:00Z", v)
		}
	}
	switch {
	case q.Get("from") != "":
		v := q.Get("from")
		if from, err = time.Parse(time.RFC3339, v); err != nil {
			return from, to, invalid("from=%q: give a time such as 2024-05-01T00:00:00Z", v)
		}
	case q.Get("since") != "":
		d, err := api.ParsePeriod(q.Get("since"))
		if err != nil {
			return from, to, invalid("since: %v", err)
		}
		from = to.Add(-d)
	default:
		from = to.Add(-def)
	}
	if !from.Before(to) {
		return from, to, invalid("from %s is not before to %s", from.Format(time.RFC3339), to.Format(time.RFC3339))
	}
	if to.Sub(from) > api.MaxUsagePeriod {
		return from, to, invalid("the period is too long: the most is %dd", api.MaxUsagePeriod/(24*time.Hour))
	}
	if to.After(now) {
		to = now
	}
	return from.UTC(), to.UTC(), nil
}

// userNames names user IDs, each read once.
func (s *Server) userNames(ctx context.Context) func(string) string {
	names := map[string]string{}
	return func(id string) string {
		n, ok := names[id]
		if !ok {
			n = s.userName(ctx, id)
			names[id] = n
		}
		return n
	}
}

// segments attributes the instances' time in [from, to) and keeps what u
// may see: their own, or everything for an admin.
func (s *Server) segments(ctx context.Context, u *store.User, from, to time.Time) ([]cost.Segment, error) {
	us, err := s.store.UsageList(ctx, store.UsageListParams{From: from, To: to})
	if err != nil {
		return nil, fmt.Errorf("read usage: %w", err)
	}
	segs := cost.Attribute(us, from, to, s.cfg.Now())
	if u.Admin {
		return segs, nil
	}
	own := segs[:0]
	for _, sg := range segs {
		if sg.UserID == u.ID {
			own = append(own, sg)
		}
	}
	return own, nil
}

// usageReport is the usage over [from, to) grouped by by.
func (s *Server) usageReport(ctx context.Context, u *store.User, from, to time.Time, by string) (*api.UsageReport, error) {
	switch by {
	case api.UsageByUser, api.UsageByLimit, api.UsageByInstanceType, api.UsageByDay:
	case "":
		by = api.UsageByUser
	default:
		return nil, invalid("by=%q: give %s, %s, %s or %s", by, api.UsageByUser, api.UsageByLimit, api.UsageByInstanceType, api.UsageByDay)
	}
	segs, err := s.segments(ctx, u, from, to)
	if err != nil {
		return nil, err
	}
	rows, total := cost.Group(segs, by, s.userNames(ctx))
	if rows == nil {
		rows = []api.UsageRow{}
	}
	return &api.UsageReport{From: from, To: to, By: by, Currency: api.Currency, Rows: rows, Total: total, All: u.Admin}, nil
}

// usageDaily is the cost per day of [from, to) stacked by user or type.
func (s *Server) usageDaily(ctx context.Context, u *store.User, from, to time.Time, stack string) (*api.UsageDaily, error) {
	switch stack {
	case api.UsageByUser, api.UsageByInstanceType, "":
	default:
		return nil, invalid("stack=%q: give %s or %s", stack, api.UsageByUser, api.UsageByInstanceType)
	}
	segs, err := s.segments(ctx, u, from, to)
	if err != nil {
		return nil, err
	}
	d := cost.Daily(segs, from, to, stack, s.userNames(ctx))
	d.All = u.Admin
	if d.Keys == nil {
		d.Keys = []string{}
	}
	return &d, nil
}

// instanceSeries is each limit's instances over [from, to) against its
// maximum. Limits are the server's, read by every user.
func (s *Server) instanceSeries(ctx context.Context, _ *store.User, from, to time.Time) (*api.InstanceSeries, error) {
	us, err := s.store.UsageList(ctx, store.UsageListParams{From: from, To: to})
	if err != nil {
		return nil, fmt.Errorf("read instances: %w", err)
	}
	changes, err := s.store.LimitHistoryList(ctx, store.LimitHistoryListParams{From: from, To: to})
	if err != nil {
		return nil, err
	}
	return &api.InstanceSeries{From: from, To: to, Limits: cost.Series(us.Instances, changes, from, to)}, nil
}

// runCosts are the costs of the runs' jobs on on-demand instances, with
// each job's holds, by job ID.
func (s *Server) runCosts(ctx context.Context, runs []*store.Run) (map[string]*api.Cost, map[string][]api.Hold, error) {
	if len(runs) == 0 {
		return nil, nil, nil
	}
	ids := make([]string, len(runs))
	for i, r := range runs {
		ids[i] = r.ID
	}
	us, err := s.store.UsageList(ctx, store.UsageListParams{RunIDs: ids})
	if err != nil {
		return nil, nil, fmt.Errorf("read the runs' cost: %w", err)
	}
	now := s.cfg.Now()
	segs := cost.Attribute(us, time.Time{}, now, now)
	return cost.JobCosts(segs), cost.Holds(segs), nil
}

// withCosts puts the costs of jobs on the API runs out, and each run's
// total on the run.
func withCosts(out []api.Run, jobs map[string]*api.Cost) {
	for i := range out {
		run := &out[i]
		var total *api.Cost
		for k := range run.Jobs {
			c := jobs[run.Jobs[k].ID]
			if c == nil {
				continue
			}
			run.Jobs[k].Cost = c
			if total == nil {
				total = &api.Cost{Currency: api.Currency}
			}
			total.Cost += c.Cost
			total.InstanceHours += c.InstanceHours
		}
		if total != nil {
			for _, j := range run.Jobs {
				if jobs[j.ID] == nil && (j.RunnerID != "" || j.RunnerName != "") {
					total.SelfHosted = true
				}
			}
		}
		run.Cost = total
	}
}

// runCost is a run's cost, each job's and each hold's.
func (s *Server) runCost(ctx context.Context, run *store.Run) (*api.RunCost, error) {
	jobs, holds, err := s.runCosts(ctx, []*store.Run{run})
	if err != nil {
		return nil, err
	}
	out := &api.RunCost{Run: run.Name, Cost: api.Cost{Currency: api.Currency}, Jobs: []api.JobCost{}}
	for _, j := range run.Jobs {
		jc := api.JobCost{JobID: j.ID, Workflow: j.Spec.Workflow, Cost: api.Cost{Currency: api.Currency}, Holds: holds[j.ID]}
		if jc.Holds == nil {
			jc.Holds = []api.Hold{}
		}
		if c := jobs[j.ID]; c != nil {
			jc.Cost = *c
		} else if j.RunnerID != "" || j.RunnerName != "" {
			jc.SelfHosted = true
		}
		out.Cost.Cost += jc.Cost.Cost
		out.InstanceHours += jc.InstanceHours
		out.SelfHosted = out.SelfHosted || jc.SelfHosted
		out.Jobs = append(out.Jobs, jc)
	}
	return out, nil
}

// budget is the monthly budget and the month's cost so far.
func (s *Server) budget(ctx context.Context, now time.Time) (*api.Budget, error) {
	return cost.ReadBudget(ctx, s.store, now)
}

func (s *Server) handleUsage(w http.ResponseWriter, r *http.Request, u *store.User) error {
	from, to, err := s.usageWindow(r, defaultUsagePeriod)
	if err != nil {
		return err
	}
	out, err := s.usageReport(r.Context(), u, from, to, r.URL.Query().Get("by"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) handleUsageDaily(w http.ResponseWriter, r *http.Request, u *store.User) error {
	from, to, err := s.usageWindow(r, defaultUsagePeriod)
	if err != nil {
		return err
	}
	out, err := s.usageDaily(r.Context(), u, from, to, r.URL.Query().Get("stack"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) handleUsageInstances(w http.ResponseWriter, r *http.Request, u *store.User) error {
	from, to, err := s.usageWindow(r, 7*24*time.Hour)
	if err != nil {
		return err
	}
	out, err := s.instanceSeries(r.Context(), u, from, to)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) handleRunCost(w http.ResponseWriter, r *http.Request, u *store.User) error {
	run, err := s.userRun(r, u)
	if err != nil {
		return err
	}
	out, err := s.runCost(r.Context(), run)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) handleBudgetGet(w http.ResponseWriter, r *http.Request, u *store.User) error {
	b, err := s.budget(r.Context(), s.cfg.Now())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, b)
	return nil
}

func (s *Server) handleBudgetPut(w http.ResponseWriter, r *http.Request, u *store.User) error {
	var req api.BudgetRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	if _, err := api.ParseMonthly(strconv.FormatFloat(req.Monthly, 'f', -1, 64)); err != nil {
		return invalid("%v", err)
	}
	ctx := r.Context()
	var err error
	if req.Monthly == 0 {
		err = s.store.SettingDelete(ctx, cost.SettingBudget)
		if errors.Is(err, store.ErrNotFound) {
			err = nil
		}
	} else {
		err = s.store.SettingPut(ctx, store.SettingPutParams{Name: cost.SettingBudget,
			Value: strconv.FormatFloat(req.Monthly, 'f', -1, 64)})
	}
	if err != nil {
		return fmt.Errorf("set the budget: %w", err)
	}
	if err := s.audit(r, u, auditBudgetSet, "on-demand", map[string]any{"monthly": req.Monthly, "currency": api.Currency}); err != nil {
		return err
	}
	b, err := s.budget(ctx, s.cfg.Now())
	if err != nil {
		return err
	}
	s.wakeAutoscaler()
	s.events.publish("", api.EventLimits)
	s.log.Info("on-demand budget set", "user", u.Name, "monthly", req.Monthly)
	writeJSON(w, http.StatusOK, b)
	return nil
}
