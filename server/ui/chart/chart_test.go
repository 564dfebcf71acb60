package chart

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"
)

// node is an element of a parsed SVG.
type node struct {
	name     string
	attrs    map[string]string
	text     string
	children []*node
}

func parse(t *testing.T, b []byte) *node {
	t.Helper()
	d := xml.NewDecoder(bytes.NewReader(b))
	var stack []*node
	var root *node
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("the SVG is not well-formed XML: %v\n%s", err, b)
		}
		switch tk := tok.(type) {
		case xml.StartElement:
			n := &node{name: tk.Name.Local, attrs: map[string]string{}}
			for _, a := range tk.Attr {
				n.attrs[a.Name.Local] = a.Value
			}
			if len(stack) > 0 {
				p := stack[len(stack)-1]
				p.children = append(p.children, n)
			} else {
				root = n
			}
			stack = append(stack, n)
		case xml.EndElement:
			stack = stack[:len(stack)-1]
		case xml.CharData:
			if len(stack) > 0 {
				stack[len(stack)-1].text += string(tk)
			}
		}
	}
	return root
}

// all is every element under n (n included) that match selects.
func (n *node) all(match func(*node) bool) []*node {
	var out []*node
	if match(n) {
		out = append(out, n)
	}
	for _, c := range n.children {
		out = append(out, c.all(match)...)
	}
	return out
}

func has(attr string) func(*node) bool {
	return func(n *node) bool { _, ok := n.attrs[attr]; return ok }
}

// accessible checks what every chart has: a title and a description
// named by aria-labelledby, role img and a viewBox.
func accessible(t *testing.T, root *node, title string) {
	t.Helper()
	if root.name != "svg" || root.attrs["role"] != "img" || root.attrs["viewBox"] == "" {
		t.Fatalf("root %s role=%q viewBox=%q", root.name, root.attrs["role"], root.attrs["viewBox"])
	}
	ids := strings.Fields(root.attrs["aria-labelledby"])
	if len(ids) != 2 {
		t.Fatalf("aria-labelledby=%q", root.attrs["aria-labelledby"])
	}
	byID := map[string]*node{}
	for _, n := range root.all(has("id")) {
		byID[n.attrs["id"]] = n
	}
	if n := byID[ids[0]]; n == nil || n.name != "title" || n.text != title {
		t.Errorf("the title named by aria-labelledby is %+v, want %q", n, title)
	}
	if n := byID[ids[1]]; n == nil || n.name != "desc" || n.text == "" {
		t.Errorf("the description named by aria-labelledby is %+v", n)
	}
}

var t0 = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

func TestStepsCountIntervals(t *testing.T) {
	t.Parallel()
	h := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Hour) }
	got := Steps([]Interval{
		{Start: h(0), End: h(3)},
		{Start: h(1), End: h(2)},
		{Start: h(2)},            // starts as the other ends: no change at h(2)
		{Start: h(4), End: h(4)}, // never up
		{Start: h(5), End: h(6)},
	})
	want := []StepPoint{{h(0), 1}, {h(1), 2}, {h(3), 1}, {h(5), 2}, {h(6), 1}}
	if len(got) != len(want) {
		t.Fatalf("Steps = %v, want %v", got, want)
	}
	for i := range want {
		if !got[i].T.Equal(want[i].T) || got[i].V != want[i].V {
			t.Errorf("step %d = %v, want %v", i, got[i], want[i])
		}
	}
}

// TestStepChartMarksTheRecords: each point within the time axis is drawn
// as a mark with its time and value, for random records; the value held at
// the start is the last before it.
func TestStepChartMarksTheRecords(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := range 200 {
		var ivs []Interval
		for range rng.IntN(12) {
			start := t0.Add(time.Duration(rng.IntN(48*60)) * time.Minute)
			iv := Interval{Start: start}
			if rng.IntN(4) > 0 {
				iv.End = start.Add(time.Duration(rng.IntN(24*60)) * time.Minute)
			}
			ivs = append(ivs, iv)
		}
		from := t0.Add(time.Duration(rng.IntN(24*60)) * time.Minute)
		to := from.Add(24 * time.Hour)
		pts := Steps(ivs)
		maxPts := []StepPoint{{t0, 3}, {t0.Add(30 * time.Hour), 1}}
		c := StepChart{ID: "c", Title: "Instances", Desc: "d", From: from, To: to, YLabel: "instances", Width: 300 + rng.IntN(1000),
			Panels: []StepPanel{{Title: "limit", Key: "l1", Series: []StepSeries{
				{Name: "running", Key: "running", Points: pts},
				{Name: "maximum", Key: "maximum", Points: maxPts, Dashed: true},
			}}}}
		root := parse(t, c.SVG())
		accessible(t, root, "Instances")
		if root.attrs["data-from"] != from.Format(time.RFC3339Nano) || root.attrs["data-to"] != to.Format(time.RFC3339Nano) {
			t.Fatalf("trial %d: the chart says it covers %s to %s, want %v to %v", trial, root.attrs["data-from"], root.attrs["data-to"], from, to)
		}
		for _, ser := range []struct {
			key string
			pts []StepPoint
		}{{"running", pts}, {"maximum", maxPts}} {
			gs := root.all(func(n *node) bool { return n.attrs["data-series"] == ser.key })
			var want []StepPoint
			for _, p := range ser.pts {
				if p.T.After(from) && !p.T.After(to) {
					want = append(want, p)
				}
			}
			startV, hasStart := StepSeries{Points: ser.pts}.valueAt(from)
			if len(gs) == 0 {
				if len(want) > 0 || hasStart {
					t.Fatalf("trial %d: series %s is not drawn", trial, ser.key)
				}
				continue
			}
			if got := gs[0].attrs["data-start"]; hasStart != (got != "") || (hasStart && got != strconv.FormatFloat(startV, 'f', -1, 64)) {
				t.Errorf("trial %d: %s data-start=%q, want %v (%v)", trial, ser.key, got, startV, hasStart)
			}
			marks := gs[0].all(func(n *node) bool { return n.attrs["class"] == "step" })
			if len(marks) != len(want) {
				t.Fatalf("trial %d: %s has %d marks, want %d", trial, ser.key, len(marks), len(want))
			}
			for i, m := range marks {
				tm, err := time.Parse(time.RFC3339Nano, m.attrs["data-t"])
				if err != nil || !tm.Equal(want[i].T) || m.attrs["data-v"] != strconv.FormatFloat(want[i].V, 'f', -1, 64) {
					t.Errorf("trial %d: %s mark %d is %s=%s, want %v", trial, ser.key, i, m.attrs["data-t"], m.attrs["data-v"], want[i])
				}
			}
		}
	}
}

// TestStepChartDrawsADecrease: a maximum lowered from 3 to 1 goes down in
// the path at the time of the change.
func TestStepChartDrawsADecrease(t *testing.T) {
	t.Parallel()
	c := StepChart{ID: "c", Title: "t", Desc: "d", From: t0, To: t0.Add(4 * time.Hour), Width: 440,
		Panels: []StepPanel{{Key: "l", Series: []StepSeries{{Name: "maximum", Key: "maximum", Dashed: true,
			Points: []StepPoint{{t0.Add(-time.Hour), 3}, {t0.Add(2 * time.Hour), 1}}}}}}}
	root := parse(t, c.SVG())
	paths := root.all(func(n *node) bool { return n.name == "path" })
	if len(paths) != 1 {
		t.Fatalf("%d paths", len(paths))
	}
	// M x0 y(3) H xmid V y(1) H x1: y grows downwards, so the second V is
	// larger than the first y.
	var x0, y3, xm, y1 float64
	d := strings.NewReplacer("M", "", "H", " ", "V", " ").Replace(paths[0].attrs["d"])
	f := strings.Fields(d)
	if len(f) != 5 {
		t.Fatalf("path d=%q", paths[0].attrs["d"])
	}
	for i, p := range []*float64{&x0, &y3, &xm, &y1} {
		*p, _ = strconv.ParseFloat(f[i], 64)
	}
	if !(y1 > y3) || math.Abs(xm-(x0+(440-stepLeft-stepRight)/2)) > 0.01 {
		t.Errorf("path d=%q: want a drop half way", paths[0].attrs["d"])
	}
}

// TestBarChartSegmentsSumToTheBar: each bar's segments add up to its
// total, in value and in height.
func TestBarChartSegmentsSumToTheBar(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(3, 4))
	for trial := range 100 {
		nc, ns := 1+rng.IntN(31), 1+rng.IntN(6)
		c := BarChart{ID: "b", Title: "Cost per day", Desc: "d", YLabel: "USD", Format: Money("USD"), Width: 280 + rng.IntN(1200)}
		for i := range nc {
			c.Categories = append(c.Categories, t0.AddDate(0, 0, i).Format("Jan 2"))
		}
		for s := range ns {
			ser := BarSeries{Name: "user" + strconv.Itoa(s)}
			for range nc {
				v := 0.0
				if rng.IntN(3) > 0 {
					v = math.Round(rng.Float64()*10000) / 100
				}
				ser.Values = append(ser.Values, v)
			}
			c.Series = append(c.Series, ser)
		}
		root := parse(t, c.SVG())
		accessible(t, root, "Cost per day")
		bars := root.all(func(n *node) bool { return n.attrs["class"] == "bar" })
		if len(bars) != nc {
			t.Fatalf("trial %d: %d bars, want %d", trial, len(bars), nc)
		}
		totals := c.Totals()
		heights := make([]float64, len(bars))
		for i, b := range bars {
			total, _ := strconv.ParseFloat(b.attrs["data-total"], 64)
			if math.Abs(total-totals[i]) > 1e-9 {
				t.Errorf("trial %d bar %d: data-total %v, want %v", trial, i, total, totals[i])
			}
			sum, height := 0.0, 0.0
			for j, r := range b.all(func(n *node) bool { return n.name == "rect" }) {
				v, _ := strconv.ParseFloat(r.attrs["data-value"], 64)
				h, _ := strconv.ParseFloat(r.attrs["height"], 64)
				sum += v
				height += h
				if j > 0 {
					// Stacked: each segment sits on the one before.
					prev := b.all(func(n *node) bool { return n.name == "rect" })[j-1]
					py, _ := strconv.ParseFloat(prev.attrs["y"], 64)
					y, _ := strconv.ParseFloat(r.attrs["y"], 64)
					if math.Abs(y+h-py) > 0.02 {
						t.Errorf("trial %d bar %d: segment %d ends at %v, the one below starts at %v", trial, i, j, y+h, py)
					}
				}
			}
			if math.Abs(sum-totals[i]) > 1e-6 {
				t.Errorf("trial %d bar %d: segments sum to %v, want %v", trial, i, sum, totals[i])
			}
			heights[i] = height
		}
		// The height per unit is the same for every bar: the tallest's.
		top := 0
		for i := range totals {
			if totals[i] > totals[top] {
				top = i
			}
		}
		for i := range totals {
			if totals[top] > 0 && math.Abs(heights[i]-totals[i]*heights[top]/totals[top]) > 0.05 {
				t.Errorf("trial %d bar %d: %v high for %v; the tallest %v for %v", trial, i, heights[i], totals[i], heights[top], totals[top])
			}
		}
	}
}

func TestTimelineSpans(t *testing.T) {
	t.Parallel()
	c := Timeline{ID: "t", Title: "Jobs", Desc: "d", From: t0, To: t0.Add(10 * time.Minute), Width: 390,
		Phases: []Phase{{Name: "queued"}, {Name: "running"}},
		Rows: []TimelineRow{{Label: `train <&> "x"`, Key: "j1", Spans: []Span{
			{Phase: "queued", From: t0, To: t0.Add(time.Minute)},
			{Phase: "running", From: t0.Add(time.Minute), To: t0.Add(9 * time.Minute), Derived: true},
		}}}}
	root := parse(t, c.SVG())
	accessible(t, root, "Jobs")
	rects := root.all(has("data-phase"))
	if len(rects) != 2 || rects[0].attrs["data-phase"] != "queued" || rects[1].attrs["data-derived"] != "true" ||
		rects[1].attrs["data-to"] != "2026-12-01T10:09:00Z" {
		t.Errorf("spans: %+v %+v", rects[0].attrs, rects[1].attrs)
	}
	labels := root.all(func(n *node) bool { return n.attrs["class"] == "row-label" })
	if len(labels) != 1 || !strings.HasPrefix(`train <&> "x"`, strings.TrimSuffix(labels[0].text, "…")) {
		t.Errorf("row label %+v", labels)
	}
}

func TestEmptyCharts(t *testing.T) {
	t.Parallel()
	for _, b := range [][]byte{
		StepChart{ID: "a", Title: "a", Desc: "d", Empty: "No limits"}.SVG(),
		BarChart{ID: "b", Title: "b", Desc: "d", Empty: "No cost"}.SVG(),
		Timeline{ID: "c", Title: "c", Desc: "d", Empty: "No jobs"}.SVG(),
	} {
		root := parse(t, b)
		if len(root.all(func(n *node) bool { return n.attrs["class"] == "empty" && n.text != "" })) != 1 {
			t.Errorf("an empty chart does not say so:\n%s", b)
		}
	}
}
