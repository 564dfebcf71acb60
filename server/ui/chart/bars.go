package chart

import (
	"fmt"
	"strconv"
)

// BarChart is stacked bars: one bar per category (a day), made of one
// segment per series (a user, an instance type) stacked in the series'
// order, its height the series' value.
type BarChart struct {
	ID    string
	Title string
	Desc  string
	// Categories label the bars, left to right.
	Categories []string
	Series     []BarSeries
	// YLabel names the values ("cost, USD"); Format writes them (Count when
	// nil).
	YLabel string
	Format func(float64) string
	// Empty is what the chart says when it has no categories.
	Empty string
	Width int
}

// BarSeries is one series of a BarChart: its value in each category, in
// the order of the categories (missing ones are 0).
type BarSeries struct {
	Name   string
	Values []float64
	Color  string
}

func (s BarSeries) at(i int) float64 {
	if i < len(s.Values) {
		return s.Values[i]
	}
	return 0
}

// Totals are the sums of the series in each category.
func (c BarChart) Totals() []float64 {
	out := make([]float64, len(c.Categories))
	for _, s := range c.Series {
		for i := range out {
			out[i] += s.at(i)
		}
	}
	return out
}

const (
	barLeft   = 58.0
	barRight  = 12.0
	barPlot   = 200.0
	barBottom = 40.0
)

// SVG draws the chart. Each bar is a group with the category in
// data-category and its total in data-total; each segment a rect with its
// series in data-series and its value in data-value.
func (c BarChart) SVG() []byte {
	w := float64(ClampWidth(c.Width))
	format := c.Format
	if format == nil {
		format = Count
	}
	items := make([]legendItem, len(c.Series))
	for i, s := range c.Series {
		if s.Color == "" {
			c.Series[i].Color = Palette[i%len(Palette)]
		}
		items[i] = legendItem{name: s.Name, color: c.Series[i].Color}
	}
	legendH := legendHeight(items, w-barLeft)
	top := legendH + 14
	h := top + barPlot + barBottom
	var s svg
	if len(c.Categories) == 0 {
		s.open(c.ID, "bar-chart", w, 60, c.Title, c.Desc)
		s.text(w/2, 34, "middle", "empty", c.Empty)
		return s.close()
	}
	s.open(c.ID, "bar-chart", w, h, c.Title, c.Desc)
	s.legend(items, barLeft, 0, w-barLeft)
	totals := c.Totals()
	maxT := 0.0
	for _, t := range totals {
		maxT = max(maxT, t)
	}
	ax := newYAxis(maxT, 4, 0)
	plotW := w - barLeft - barRight
	bottom := top + barPlot
	s.valueAxis(ax, barLeft, barLeft+plotW, top, bottom, format)
	yOf := func(v float64) float64 { return barPlot * v / ax.Top }
	band := plotW / float64(len(c.Categories))
	barW := min(max(1, band*0.7), 56)
	// Label every k-th bar so that labels do not overlap.
	labelW := 0.0
	for _, cat := range c.Categories {
		labelW = max(labelW, float64(len([]rune(cat)))*charWidth+8)
	}
	every := max(1, int(labelW/band)+1)
	if labelW <= band {
		every = 1
	}
	for i, cat := range c.Categories {
		x := barLeft + band*float64(i) + (band-barW)/2
		fmt.Fprintf(&s.b, `<g class="bar" data-category="%s" data-total="%s"><title>%s: %s</title>`,
			esc(cat), strconv.FormatFloat(totals[i], 'f', -1, 64), esc(cat), esc(format(totals[i])))
		y := bottom
		for _, ser := range c.Series {
			v := ser.at(i)
			if v <= 0 {
				continue
			}
			hgt := yOf(v)
			y -= hgt
			fmt.Fprintf(&s.b, `<rect x="%s" y="%s" width="%s" height="%s" fill="%s" data-series="%s" data-value="%s"><title>%s, %s: %s</title></rect>`,
				num(x), num(y), num(barW), num(hgt), ser.Color, esc(ser.Name), strconv.FormatFloat(v, 'f', -1, 64),
				esc(ser.Name), esc(cat), esc(format(v)))
		}
		s.b.WriteString(`</g>`)
		if i%every == 0 {
			s.text(x+barW/2, bottom+16, "middle", "tick-label", cat)
		}
	}
	s.line(barLeft, bottom, barLeft+plotW, bottom, "axis-line", "currentColor")
	s.text(barLeft+plotW/2, h-4, "middle", "axis-label", "day (UTC)")
	fmt.Fprintf(&s.b, `<text transform="translate(12 %s) rotate(-90)" text-anchor="middle" class="axis-label" fill="currentColor">%s</text>`,
		num(top+barPlot/2), esc(c.YLabel))
	return s.close()
}
