package chart

import (
	"fmt"
	"time"
)

// Timeline is rows of spans over time, one row per job, each span a phase
// of the job (queued, provisioning, running, uploading).
type Timeline struct {
	ID    string
	Title string
	Desc  string
	// From and To are the time axis.
	From, To time.Time
	// Phases name the phases in the legend's order, with their colours.
	Phases []Phase
	Rows   []TimelineRow
	Empty  string
	Width  int
}

// Phase is one kind of span, with its colour.
type Phase struct {
	Name  string
	Color string
}

// TimelineRow is one row of a Timeline.
type TimelineRow struct {
	Label string
	// Key identifies the row in its data-key attribute.
	Key   string
	Spans []Span
}

// Span is a phase from From to To.
type Span struct {
	Phase    string
	From, To time.Time
	// Derived says the span's start or end was not recorded but inferred
	// from what was (drawn hatched, and said in its title).
	Derived bool
}

const (
	tlRight  = 14.0
	tlRow    = 24.0
	tlBar    = 14.0
	tlBottom = 38.0
)

// SVG draws the timeline. Each span is a rect with data-phase, data-from
// and data-to (RFC 3339), and data-derived when inferred.
func (c Timeline) SVG() []byte {
	w := float64(ClampWidth(c.Width))
	items := make([]legendItem, len(c.Phases))
	colors := map[string]string{}
	for i, p := range c.Phases {
		col := p.Color
		if col == "" {
			col = Palette[i%len(Palette)]
		}
		colors[p.Name] = col
		items[i] = legendItem{name: p.Name, color: col}
	}
	var s svg
	if len(c.Rows) == 0 {
		s.open(c.ID, "timeline", w, 60, c.Title, c.Desc)
		s.text(w/2, 34, "middle", "empty", c.Empty)
		return s.close()
	}
	labelW := 0.0
	for _, r := range c.Rows {
		labelW = max(labelW, float64(len([]rune(r.Label)))*charWidth+10)
	}
	labelW = min(max(labelW, 40), w*0.3)
	legendH := legendHeight(items, w-labelW)
	top := legendH + 10
	h := top + float64(len(c.Rows))*tlRow + tlBottom
	s.open(c.ID, "timeline", w, h, c.Title, c.Desc, timeAttrs(c.From, c.To)...)
	s.legend(items, labelW, 0, w-labelW)
	sc := timeScale{from: c.From, to: c.To, x0: labelW, x1: w - tlRight}
	for i, r := range c.Rows {
		y := top + float64(i)*tlRow
		fmt.Fprintf(&s.b, `<g class="row" data-key="%s">`, esc(r.Key))
		s.text(labelW-8, y+tlRow/2+4, "end", "row-label", truncate(r.Label, labelW-10))
		for _, sp := range r.Spans {
			x0, x1 := sc.x(sp.From), sc.x(sp.To)
			derived, note := "", ""
			if sp.Derived {
				derived, note = ` data-derived="true" fill-opacity="0.6"`, " (time inferred)"
			}
			fmt.Fprintf(&s.b, `<rect x="%s" y="%s" width="%s" height="%s" fill="%s" data-phase="%s" data-from="%s" data-to="%s"%s><title>%s: %s, %s%s</title></rect>`,
				num(x0), num(y+(tlRow-tlBar)/2), num(max(x1-x0, 1)), num(tlBar), colors[sp.Phase], esc(sp.Phase),
				sp.From.UTC().Format(time.RFC3339Nano), sp.To.UTC().Format(time.RFC3339Nano), derived,
				esc(r.Label), esc(sp.Phase), esc(Duration(sp.To.Sub(sp.From))), note)
		}
		s.b.WriteString(`</g>`)
	}
	bottom := top + float64(len(c.Rows))*tlRow
	s.timeAxis(sc, bottom, w)
	s.text(sc.x0+(sc.x1-sc.x0)/2, h-4, "middle", "axis-label", "time (UTC)")
	return s.close()
}

// Duration formats d as people read it: 1h 2m, 3m 4s, 5s.
func Duration(d time.Duration) string {
	d = d.Round(time.Second)
	h := d / time.Hour
	m := (d % time.Hour) / time.Minute
	sec := (d % time.Minute) / time.Second
	switch {
	case h > 0:
		return fmt.Sprintf("%dh %dm", h, m)
	case m > 0:
		return fmt.Sprintf("%dm %ds", m, sec)
	}
	return fmt.Sprintf("%ds", sec)
}
