package server

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/server/ui"
	"github.com/dstackai/dstack/server/ui/chart"
	"github.com/dstackai/dstack/store"
)

// The Usage page's charts, drawn here as SVG (package chart) from what
// GET /api/v1/usage/instances and /usage/daily answer (usage.go; since=,
// or from= and to=, as there), for a signed-in
// browser: a member's charts hold their own usage, an admin's everyone's,
// as the API decides. The page fetches them with the width it shows them
// at and again when instances, limits or runs change.

func (s *Server) usageUIRoutes(rt *router) {
	rt.page("GET /usage", s.uiPage("usage", func(r *http.Request, _ *session, p *ui.Page) { p.Title = "Usage" }))
	rt.page("GET /usage/charts/instances.svg", s.chartHandler(s.instancesChart))
	rt.page("GET /usage/charts/daily.svg", s.chartHandler(s.dailyChart))
	rt.page("GET /runs/{name}/timeline.svg", s.handleRunTimeline)
}

// chartHandler serves the chart draw makes for the signed-in user.
func (s *Server) chartHandler(draw func(r *http.Request, u *store.User) ([]byte, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		_, u, ok := s.signedIn(w, r)
		if !ok {
			return
		}
		b, err := draw(r, u)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		writeSVG(w, b)
	}
}

// writeSVG answers a chart, with the pages' headers.
func writeSVG(w http.ResponseWriter, b []byte) {
	ui.Headers(w.Header())
	w.Header().Set("Content-Type", "image/svg+xml; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

// chartWidth is the width= the page asks a chart for, in CSS pixels
// (chart.ClampWidth); the default when absent.
func chartWidth(r *http.Request) (int, error) {
	v := r.URL.Query().Get("width")
	if v == "" {
		return chart.DefaultWidth, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, invalid("width=%q: give the chart's width in pixels, such as 720", v)
	}
	return chart.ClampWidth(n), nil
}

// instancesChart: running instances per limit over time against the
// limit's maximum, a panel per limit.
func (s *Server) instancesChart(r *http.Request, u *store.User) ([]byte, error) {
	width, err := chartWidth(r)
	if err != nil {
		return nil, err
	}
	from, to, err := s.usageWindow(r, 7*24*time.Hour)
	if err != nil {
		return nil, err
	}
	ser, err := s.instanceSeries(r.Context(), u, from, to)
	if err != nil {
		return nil, err
	}
	return instancesStepChart(ser, width).SVG(), nil
}

// instancesStepChart lays out an api.InstanceSeries as a step chart.
func instancesStepChart(ser *api.InstanceSeries, width int) chart.StepChart {
	c := chart.StepChart{
		ID: "instances", Title: "On-demand instances per limit", YLabel: "instances", From: ser.From, To: ser.To, Width: width,
		Empty: "No limit had instances in this time.",
	}
	var desc []string
	for _, l := range ser.Limits {
		title := fmt.Sprintf("%s (%s), %s/%s", l.InstanceType, l.PurchaseType, l.Backend, l.Region)
		c.Panels = append(c.Panels, chart.StepPanel{Title: title, Key: l.Key, Series: []chart.StepSeries{
			{Name: "instances", Key: "running", Points: steps(l.Running), Color: chart.Palette[0]},
			{Name: "maximum", Key: "max", Points: steps(l.Max), Dashed: true, Color: "#c43c5c"},
		}})
		desc = append(desc, fmt.Sprintf("%s: at most %d instances at once, maximum now %d.", title, peak(l.Running), last(l.Max)))
	}
	c.Desc = fmt.Sprintf("Instances counted against each limit from %s to %s (UTC), with the limit's maximum as a dashed line. %s",
		ser.From.UTC().Format("Jan 2 15:04"), ser.To.UTC().Format("Jan 2 15:04"), strings.Join(desc, " "))
	return c
}

func steps(ss []api.Step) []chart.StepPoint {
	out := make([]chart.StepPoint, len(ss))
	for i, s := range ss {
		out[i] = chart.StepPoint{T: s.At, V: float64(s.Value)}
	}
	return out
}

func peak(ss []api.Step) int {
	m := 0
	for _, s := range ss {
		m = max(m, s.Value)
	}
	return m
}

func last(ss []api.Step) int {
	if len(ss) == 0 {
		return 0
	}
	return ss[len(ss)-1].Value
}

// dailyChart: cost per day, stacked by user or instance type (stack=).
func (s *Server) dailyChart(r *http.Request, u *store.User) ([]byte, error) {
	width, err := chartWidth(r)
	if err != nil {
		return nil, err
	}
	from, to, err := s.usageWindow(r, 7*24*time.Hour)
	if err != nil {
		return nil, err
	}
	stack := r.URL.Query().Get("stack")
	switch stack {
	case "":
		stack = api.UsageByUser
	case api.UsageByUser, api.UsageByInstanceType:
	default:
		return nil, invalid("stack=%q: give user or instance-type", stack)
	}
	d, err := s.usageDaily(r.Context(), u, from, to, stack)
	if err != nil {
		return nil, err
	}
	return dailyBarChart(d, width).SVG(), nil
}

// dailyBarChart lays out an api.UsageDaily as stacked bars.
func dailyBarChart(d *api.UsageDaily, width int) chart.BarChart {
	by := "user"
	if d.Stack == api.UsageByInstanceType {
		by = "instance type"
	}
	c := chart.BarChart{
		ID: "daily", Title: "Cost per day by " + by, YLabel: "cost, " + d.Currency, Format: chart.Money(d.Currency), Width: width,
		Empty: "Nothing to show in this time.",
	}
	total := 0.0
	for _, day := range d.Days {
		label := day.Day
		if t, err := time.Parse(time.DateOnly, day.Day); err == nil {
			label = t.Format("Jan 2")
		}
		c.Categories = append(c.Categories, label)
		total += day.Cost
	}
	for _, k := range d.Keys {
		name := k
		if name == "" {
			name = "(no job)"
		}
		ser := chart.BarSeries{Name: name, Values: make([]float64, len(d.Days))}
		for i, day := range d.Days {
			ser.Values[i] = day.Parts[k]
		}
		c.Series = append(c.Series, ser)
	}
	c.Desc = fmt.Sprintf("Cost of on-demand instances per day (UTC) from %s to %s, stacked by %s: %s in all.",
		d.From.UTC().Format("Jan 2"), d.To.UTC().Format("Jan 2"), by, chart.Money(d.Currency)(total))
	return c
}
