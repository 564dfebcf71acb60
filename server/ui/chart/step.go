package chart

import (
	"bytes"
	"fmt"
	"slices"
	"strconv"
	"time"
)

// StepChart is one or more panels, one above the other, each with its own
// value axis and one time axis for all: counts that change at instants and
// hold between them, such as the instances running under a limit against
// the limit's maximum.
type StepChart struct {
	// ID is the chart's element ID, unique on the page.
	ID    string
	Title string
	// Desc describes the chart for those who cannot see it.
	Desc string
	// From and To are the time axis; points outside it are not drawn, a
	// value set before From holds at From.
	From, To time.Time
	// YLabel names the values ("instances").
	YLabel string
	Panels []StepPanel
	// Empty is what the chart says when it has no panels.
	Empty string
	// Width is the width to lay the chart out for (ClampWidth).
	Width int
}

// StepPanel is one plot of a StepChart.
type StepPanel struct {
	Title string
	// Key identifies the panel in its data-key attribute.
	Key    string
	Series []StepSeries
}

// StepSeries is one line of a panel.
type StepSeries struct {
	Name string
	// Key identifies the series in its data-series attribute.
	Key string
	// Points are the values in time order: each holds from its T until
	// the next point's. Before the first point the series is not drawn.
	Points []StepPoint
	// Dashed draws a dashed line (a maximum); otherwise a line over a
	// light area.
	Dashed bool
	// Color is the line's; empty takes the palette's next.
	Color string
}

// StepPoint is the value a series takes at T.
type StepPoint struct {
	T time.Time
	V float64
}

// valueAt is the series' value at t and whether it has one (a point at or
// before t).
func (s StepSeries) valueAt(t time.Time) (float64, bool) {
	v, ok := 0.0, false
	for _, p := range s.Points {
		if p.T.After(t) {
			break
		}
		v, ok = p.V, true
	}
	return v, ok
}

// Layout of a step chart's panels, in CSS pixels.
const (
	stepLeft        = 44.0
	stepRight       = 14.0
	stepPanelTitle  = 20.0
	stepPlotHeight  = 120.0
	stepPanelGap    = 16.0
	stepAxisHeight  = 38.0
	stepLegendSpace = 8.0
)

// SVG draws the chart. The root has the time axis in data-from and
// data-to (RFC 3339).
func (c StepChart) SVG() []byte {
	w := float64(ClampWidth(c.Width))
	var items []legendItem
	seen := map[string]bool{}
	colors := map[string]string{}
	for _, p := range c.Panels {
		for i, s := range p.Series {
			key := s.Key + "\x00" + s.Name
			col := s.Color
			if col == "" {
				col = Palette[i%len(Palette)]
			}
			colors[key] = col
			if !seen[key] {
				seen[key] = true
				items = append(items, legendItem{name: s.Name, color: col, dashed: s.Dashed})
			}
		}
	}
	plotW := w - stepLeft - stepRight
	legendH := legendHeight(items, w-stepLeft)
	top := legendH + stepLegendSpace
	h := top + float64(len(c.Panels))*(stepPanelTitle+stepPlotHeight+stepPanelGap) + stepAxisHeight
	if len(c.Panels) == 0 {
		h = 60
	}
	var s svg
	s.open(c.ID, "step-chart", w, h, c.Title, c.Desc, timeAttrs(c.From, c.To)...)
	if len(c.Panels) == 0 {
		s.text(w/2, 34, "middle", "empty", c.Empty)
		return s.close()
	}
	s.legend(items, stepLeft, 0, w-stepLeft)
	sc := timeScale{from: c.From, to: c.To, x0: stepLeft, x1: stepLeft + plotW}
	y := top
	for _, p := range c.Panels {
		fmt.Fprintf(&s.b, `<g class="panel" data-key="%s">`, esc(p.Key))
		s.text(stepLeft, y+14, "start", "panel-title", truncate(p.Title, plotW))
		plotTop := y + stepPanelTitle
		plotBottom := plotTop + stepPlotHeight
		maxV := 0.0
		for _, ser := range p.Series {
			for _, pt := range ser.Points {
				maxV = max(maxV, pt.V)
			}
		}
		// Headroom above the highest line, so that it does not run along
		// the panel's title.
		ax := newYAxis(maxV+0.5, 4, 1)
		s.valueAxis(ax, stepLeft, stepLeft+plotW, plotTop, plotBottom, Count)
		yOf := func(v float64) float64 { return plotBottom - (plotBottom-plotTop)*v/ax.Top }
		for _, ser := range p.Series {
			s.stepSeries(ser, colors[ser.Key+"\x00"+ser.Name], sc, yOf, plotBottom)
		}
		s.line(stepLeft, plotBottom, stepLeft+plotW, plotBottom, "baseline", "currentColor")
		s.b.WriteString(`</g>`)
		y = plotBottom + stepPanelGap
	}
	s.timeAxis(sc, y-stepPanelGap, w)
	s.text(stepLeft+plotW/2, h-4, "middle", "axis-label", "time (UTC)")
	// The value axis' name, upright along it.
	fmt.Fprintf(&s.b, `<text transform="translate(12 %s) rotate(-90)" text-anchor="middle" class="axis-label" fill="currentColor">%s</text>`,
		num(top+(y-top)/2), esc(c.YLabel))
	return s.close()
}

// stepSeries draws one series: its path, and a mark at each point within
// the time axis with the point's time and value in data-t and data-v.
func (s *svg) stepSeries(ser StepSeries, color string, sc timeScale, yOf func(float64) float64, bottom float64) {
	var d bytes.Buffer
	start, ok := ser.valueAt(sc.from)
	var startX float64
	if ok {
		startX = sc.x0
		fmt.Fprintf(&d, "M%s %s", num(sc.x0), num(yOf(start)))
	}
	var marks []StepPoint
	for _, p := range ser.Points {
		if !p.T.After(sc.from) || p.T.After(sc.to) {
			continue
		}
		x, y := sc.x(p.T), yOf(p.V)
		if d.Len() == 0 {
			startX = x
			fmt.Fprintf(&d, "M%s %s", num(x), num(y))
		} else {
			fmt.Fprintf(&d, "H%s V%s", num(x), num(y))
		}
		marks = append(marks, p)
	}
	if d.Len() == 0 {
		return
	}
	fmt.Fprintf(&d, "H%s", num(sc.x1))
	startAttr := ""
	if ok {
		startAttr = ` data-start="` + strconv.FormatFloat(start, 'f', -1, 64) + `"`
	}
	fmt.Fprintf(&s.b, `<g class="series" data-series="%s"%s>`, esc(ser.Key), startAttr)
	if ser.Dashed {
		fmt.Fprintf(&s.b, `<path d="%s" fill="none" stroke="%s" stroke-width="2" stroke-dasharray="6 4"/>`, d.String(), color)
	} else {
		// The area under the line, then the line.
		fmt.Fprintf(&s.b, `<path d="%s V%s H%s Z" fill="%s" fill-opacity="0.15" stroke="none"/>`, d.String(), num(bottom), num(startX), color)
		fmt.Fprintf(&s.b, `<path d="%s" fill="none" stroke="%s" stroke-width="2"/>`, d.String(), color)
	}
	for _, p := range marks {
		fmt.Fprintf(&s.b, `<circle class="step" cx="%s" cy="%s" r="2.5" fill="%s" data-t="%s" data-v="%s"><title>%s: %s at %s</title></circle>`,
			num(sc.x(p.T)), num(yOf(p.V)), color, p.T.UTC().Format(time.RFC3339Nano), strconv.FormatFloat(p.V, 'f', -1, 64),
			esc(ser.Name), Count(p.V), p.T.UTC().Format("Jan 2 15:04:05 UTC"))
	}
	s.b.WriteString(`</g>`)
}

// Steps turns intervals (each from Start to End, End zero while it lasts)
// into the count of those under way over time: a point wherever the count
// changes, in time order. Intervals that start and end at the same instant
// count for nothing.
func Steps(intervals []Interval) []StepPoint {
	type change struct {
		t time.Time
		d int
	}
	var cs []change
	for _, iv := range intervals {
		if !iv.End.IsZero() && !iv.End.After(iv.Start) {
			continue
		}
		cs = append(cs, change{iv.Start, 1})
		if !iv.End.IsZero() {
			cs = append(cs, change{iv.End, -1})
		}
	}
	// Sort by time; at one instant, the sum is what counts.
	slices.SortStableFunc(cs, func(a, b change) int { return a.t.Compare(b.t) })
	var out []StepPoint
	n := 0
	for i := 0; i < len(cs); {
		t := cs[i].t
		for ; i < len(cs) && cs[i].t.Equal(t); i++ {
			n += cs[i].d
		}
		if len(out) > 0 && out[len(out)-1].V == float64(n) {
			continue
		}
		out = append(out, StepPoint{T: t, V: float64(n)})
	}
	return out
}

// Interval is a span of time; a zero End has not ended.
type Interval struct {
	Start, End time.Time
}
