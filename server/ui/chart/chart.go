// Package chart draws the web UI's charts as SVG on the server: a step
// chart (a count over time against its maximum), stacked bars (a cost per
// day by user or instance type) and a timeline (a run's jobs through their
// phases). The pages put the SVG in their own document, so that it is styled
// by the page's stylesheet, read by screen readers and scaled by the
// browser; nothing in it runs as code.
//
// Every chart is accessible as an image with a title and a description
// (role="img", aria-labelledby), names its axes and has a legend. It is laid
// out for the width it is given, in CSS pixels (the page asks for the width
// it has, so that a phone gets a narrow chart with text of the same size,
// rather than a wide one scaled down), and has a viewBox, so that it still
// scales where it is shown at another width.
//
// The elements that draw the data carry it in data- attributes (a step's
// time and value, a bar segment's value), so that tests and scripts read
// the figures a chart shows without parsing its geometry.
//
// Colours are presentation attributes, which the pages' Content-Security-
// Policy allows (style attributes it does not); text is escaped.
package chart

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Width bounds: a chart asked for a width outside them is drawn at the
// nearest.
const (
	MinWidth     = 280
	MaxWidth     = 1600
	DefaultWidth = 720
)

// fontSize is the size of every text, in the chart's units (CSS pixels at
// the width asked for); charWidth roughly the width of one character of it,
// for layout.
const (
	fontSize  = 12
	charWidth = 7.0
)

// Palette is the colours given to series in order; a chart with more series
// starts again.
var Palette = []string{"#2f6fdf", "#e07b19", "#2a9d54", "#c43c5c", "#7b52c9", "#1b9aa8", "#a8862a", "#6b7280"}

// ClampWidth is w within [MinWidth, MaxWidth], and DefaultWidth for 0.
func ClampWidth(w int) int {
	if w == 0 {
		return DefaultWidth
	}
	return min(max(w, MinWidth), MaxWidth)
}

// svg builds an SVG document.
type svg struct {
	b bytes.Buffer
}

func esc(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

// num formats a coordinate: at most two decimals, no trailing zeros.
func num(f float64) string {
	return strconv.FormatFloat(math.Round(f*100)/100, 'f', -1, 64)
}

// open starts the document: id makes the title's and description's IDs
// unique on a page that shows several charts.
// attrs are more attributes of the root, already escaped.
func (s *svg) open(id, class string, w, h float64, title, desc string, attrs ...string) {
	extra := ""
	for _, a := range attrs {
		extra += " " + a
	}
	fmt.Fprintf(&s.b, `<svg xmlns="http://www.w3.org/2000/svg" class="chart %s" id="%s" viewBox="0 0 %s %s" width="%s" height="%s" role="img" aria-labelledby="%s-title %s-desc" font-size="%d" font-family="system-ui, sans-serif"%s>`,
		esc(class), esc(id), num(w), num(h), num(w), num(h), esc(id), esc(id), fontSize, extra)
	fmt.Fprintf(&s.b, `<title id="%s-title">%s</title><desc id="%s-desc">%s</desc>`, esc(id), esc(title), esc(id), esc(desc))
}

func (s *svg) close() []byte {
	s.b.WriteString(`</svg>`)
	return s.b.Bytes()
}

// text writes a text element; anchor is start, middle or end.
func (s *svg) text(x, y float64, anchor, class, t string) {
	fmt.Fprintf(&s.b, `<text x="%s" y="%s" text-anchor="%s" class="%s" fill="currentColor">%s</text>`, num(x), num(y), anchor, esc(class), esc(t))
}

func (s *svg) line(x1, y1, x2, y2 float64, class, stroke string) {
	fmt.Fprintf(&s.b, `<line x1="%s" y1="%s" x2="%s" y2="%s" class="%s" stroke="%s"/>`, num(x1), num(y1), num(x2), num(y2), esc(class), stroke)
}

// legendItem is one entry of a legend: a swatch of colour, or a dashed line
// when dashed.
type legendItem struct {
	name   string
	color  string
	dashed bool
}

// legendHeight is the height the items take laid out in rows within width.
func legendHeight(items []legendItem, width float64) float64 {
	rows := len(legendRows(items, width))
	return float64(rows) * 18
}

func itemWidth(it legendItem) float64 {
	return 16 + float64(len([]rune(it.name)))*charWidth + 14
}

// legendRows lays the items out in rows that fit width.
func legendRows(items []legendItem, width float64) [][]legendItem {
	var rows [][]legendItem
	x := 0.0
	for _, it := range items {
		w := itemWidth(it)
		if len(rows) == 0 || (x+w > width && x > 0) {
			rows = append(rows, nil)
			x = 0
		}
		rows[len(rows)-1] = append(rows[len(rows)-1], it)
		x += w
	}
	return rows
}

// legend draws the items from (x, y), the top left corner.
func (s *svg) legend(items []legendItem, x0, y0, width float64) {
	s.b.WriteString(`<g class="legend">`)
	for r, row := range legendRows(items, width) {
		x := x0
		y := y0 + float64(r)*18
		for _, it := range row {
			if it.dashed {
				fmt.Fprintf(&s.b, `<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="%s" stroke-width="2" stroke-dasharray="4 3"/>`,
					num(x), num(y+9), num(x+12), num(y+9), it.color)
			} else {
				fmt.Fprintf(&s.b, `<rect x="%s" y="%s" width="10" height="10" fill="%s"/>`, num(x+1), num(y+4), it.color)
			}
			s.text(x+16, y+13, "start", "legend-label", it.name)
			x += itemWidth(it)
		}
	}
	s.b.WriteString(`</g>`)
}

// niceStep is a round step (1, 2 or 5 times a power of ten) that divides
// [0, top] into at most n intervals; at least minStep.
func niceStep(top float64, n int, minStep float64) float64 {
	if top <= 0 || n < 1 {
		return max(1, minStep)
	}
	raw := top / float64(n)
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= raw {
			return max(m*p, minStep)
		}
	}
	return max(10*p, minStep)
}

// yAxis is a value axis from 0 to Top, ticked every Step.
type yAxis struct {
	Top, Step float64
}

// newYAxis makes an axis that shows values up to maxV with at most about
// n ticks; integer counts give minStep 1.
func newYAxis(maxV float64, n int, minStep float64) yAxis {
	if maxV <= 0 {
		maxV = max(1, minStep)
	}
	step := niceStep(maxV, n, minStep)
	return yAxis{Top: math.Ceil(maxV/step-1e-9) * step, Step: step}
}

func (a yAxis) ticks() []float64 {
	var out []float64
	for v := 0.0; v <= a.Top+a.Step/1e6; v += a.Step {
		out = append(out, v)
	}
	return out
}

// timeSteps are the intervals a time axis is ticked at.
var timeSteps = []time.Duration{
	time.Second, 5 * time.Second, 15 * time.Second, 30 * time.Second,
	time.Minute, 5 * time.Minute, 15 * time.Minute, 30 * time.Minute,
	time.Hour, 3 * time.Hour, 6 * time.Hour, 12 * time.Hour,
	24 * time.Hour, 2 * 24 * time.Hour, 7 * 24 * time.Hour, 14 * 24 * time.Hour, 28 * 24 * time.Hour,
}

// timeTicks are the round times in [from, to] at one of timeSteps, at most
// n of them, in UTC, and the layout to label them with.
func timeTicks(from, to time.Time, n int) ([]time.Time, string) {
	span := to.Sub(from)
	n = max(n, 1)
	step := timeSteps[len(timeSteps)-1]
	for _, s := range timeSteps {
		if span/s <= time.Duration(n) {
			step = s
			break
		}
	}
	layout := "15:04"
	switch {
	case step >= 24*time.Hour:
		layout = "Jan 2"
	case step < time.Minute:
		layout = "15:04:05"
	case span > 24*time.Hour:
		layout = "Jan 2 15:04"
	}
	var out []time.Time
	for t := from.UTC().Truncate(step); !t.After(to); t = t.Add(step) {
		if !t.Before(from) {
			out = append(out, t)
		}
	}
	return out, layout
}

// timeAttrs are the data-from and data-to attributes of a chart over time.
func timeAttrs(from, to time.Time) []string {
	return []string{
		`data-from="` + from.UTC().Format(time.RFC3339Nano) + `"`,
		`data-to="` + to.UTC().Format(time.RFC3339Nano) + `"`,
	}
}

// timeScale maps times in [from, to] onto [x0, x1].
type timeScale struct {
	from, to time.Time
	x0, x1   float64
}

func (s timeScale) x(t time.Time) float64 {
	span := s.to.Sub(s.from)
	if span <= 0 {
		return s.x0
	}
	if t.Before(s.from) {
		t = s.from
	}
	if t.After(s.to) {
		t = s.to
	}
	return s.x0 + (s.x1-s.x0)*float64(t.Sub(s.from))/float64(span)
}

// timeAxis draws the ticks and labels of a time axis under a plot whose
// bottom is at y, in a chart width wide: a label that would cross the
// chart's right edge ends at it.
func (s *svg) timeAxis(sc timeScale, y, width float64) {
	n := int((sc.x1 - sc.x0) / 90)
	ticks, layout := timeTicks(sc.from, sc.to, n)
	s.b.WriteString(`<g class="axis x-axis">`)
	s.line(sc.x0, y, sc.x1, y, "axis-line", "currentColor")
	for _, t := range ticks {
		x := sc.x(t)
		s.line(x, y, x, y+4, "tick", "currentColor")
		label := t.Format(layout)
		if half := float64(len(label)) * charWidth / 2; x+half > width-2 {
			s.text(width-2, y+17, "end", "tick-label", label)
		} else {
			s.text(x, y+17, "middle", "tick-label", label)
		}
	}
	s.b.WriteString(`</g>`)
}

// valueAxis draws a value axis left of a plot from top to bottom at x,
// with grid lines across to right.
func (s *svg) valueAxis(a yAxis, x, right, top, bottom float64, format func(float64) string) {
	s.b.WriteString(`<g class="axis y-axis">`)
	for _, v := range a.ticks() {
		y := bottom - (bottom-top)*v/a.Top
		s.line(x, y, right, y, "grid", "#8888")
		s.text(x-6, y+4, "end", "tick-label", format(v))
	}
	s.b.WriteString(`</g>`)
}

// Count formats a count: an integer.
func Count(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

// Money formats an amount in currency (an ISO code such as USD): two
// decimals, or none for whole amounts and amounts of 100 and more.
func Money(currency string) func(float64) string {
	sym := currency + " "
	if currency == "USD" {
		sym = "$"
	}
	return func(v float64) string {
		if math.Abs(v) >= 100 || v == math.Trunc(v) {
			return sym + strconv.FormatFloat(v, 'f', 0, 64)
		}
		return sym + strconv.FormatFloat(v, 'f', 2, 64)
	}
}

// truncate shortens s to fit width at the chart's font size, with an
// ellipsis.
func truncate(s string, width float64) string {
	n := int(width / charWidth)
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	if n <= 1 {
		return "…"
	}
	return string(r[:n-1]) + "…"
}
