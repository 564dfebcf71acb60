package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/cost"
	"github.com/dstackai/dstack/server/ui/chart"
	"github.com/dstackai/dstack/store"
	"github.com/dstackai/dstack/store/sqlite"
)

// mark is a point a step chart draws: its data-t and data-v.
type mark struct {
	T string `json:"t"`
	V string `json:"v"`
}

// chartMarks is the marks of series key in panel of the step chart in box.
func chartMarks(b *browser, box, panel, series string) (start string, marks []mark) {
	b.t.Helper()
	g := fmt.Sprintf(`document.querySelector(%s)`, js(fmt.Sprintf(`%s svg .panel[data-key="%s"] .series[data-series="%s"]`, box, panel, series)))
	start = eval[string](b, g+`.dataset.start || ""`)
	marks = eval[[]mark](b, `[...`+g+`.querySelectorAll("circle.step")].map((c) => ({t: c.dataset.t, v: c.dataset.v}))`)
	return start, marks
}

// stepMarks is what the chart must draw for points from the records:
// those after from, the value at from apart.
func stepMarks(pts []chart.StepPoint, from time.Time) (start string, marks []mark) {
	start = "0"
	for _, p := range pts {
		v := strconv.FormatFloat(p.V, 'f', -1, 64)
		if !p.T.After(from) {
			start = v
			continue
		}
		marks = append(marks, mark{T: p.T.UTC().Format(time.RFC3339Nano), V: v})
	}
	return start, marks
}

// TestUIUsage: the Usage page draws the instances the store records per
// limit, step for step, against the limit's maximum (lowered, and the
// instances over it terminated); the cost per day adds up to the usage
// table's total; both fit a laptop's and a phone's screen. A run's page
// draws its job's phases as the store recorded them.
func TestUIUsage(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test: skipped with -short")
	}
	t.Parallel()
	chromiumPath(t)
	c := newCluster(t, "")
	ctx := context.Background()

	// Instance records as the autoscaler makes them, five hours ago to
	// one: a limit of 3, two instances then a third, the maximum lowered
	// to 1 and the two over it terminated, the last one ended later.
	st, err := sqlite.Open(ctx, filepath.Join(c.dir, "server", "dstack.db"))
	if err != nil {
		t.Fatal(err)
	}
	admin, err := st.UserGetByName(ctx, "admin")
	if err != nil {
		st.Close()
		t.Fatal(err)
	}
	base := time.Now().UTC().Add(-5 * time.Hour).Truncate(time.Second)
	at := func(min int) time.Time { return base.Add(time.Duration(min) * time.Minute) }
	must := func(err error) {
		t.Helper()
		if err != nil {
			st.Close()
			t.Fatal(err)
		}
	}
	put := func(maxN int, now time.Time) *store.Limit {
		res, err := st.LimitPut(ctx, store.LimitPutParams{ID: "e2elimit", UserID: admin.ID, Backend: "local", Region: "local",
			InstanceType: "local.small", Max: maxN, Now: now})
		must(err)
		return res.Limit
	}
	launch := func(now time.Time, ids ...string) {
		var ins []store.InstanceCreate
		cloud := map[string]string{}
		for _, id := range ids {
			ins = append(ins, store.InstanceCreate{ID: id})
			cloud[id] = "cloud-" + id
		}
		_, err := st.InstanceCreate(ctx, store.InstanceCreateParams{LimitID: "e2elimit", PricePerHour: 0.5, LaunchKey: "key-" + ids[0], Instances: ins, Now: now})
		must(err)
		_, err = st.InstanceSetLaunched(ctx, store.InstanceSetLaunchedParams{CloudIDs: cloud, Now: now.Add(time.Minute)})
		must(err)
	}
	end := func(id string, now time.Time) {
		_, _, err := st.InstanceSetState(ctx, store.InstanceSetStateParams{ID: id, State: store.InstanceTerminated, Reason: "e2e", MaxAttempts: 1, Now: now})
		must(err)
	}
	l := put(3, at(0))
	launch(at(30), "e2e-i1", "e2e-i2")
	launch(at(60), "e2e-i3")
	put(1, at(180))
	end("e2e-i2", at(181))
	end("e2e-i3", at(182))
	end("e2e-i1", at(270))
	insts, err := st.InstanceList(ctx, store.InstanceListParams{LimitID: l.ID})
	must(err)
	st.Close()
	var ivs []chart.Interval
	for _, in := range insts {
		iv := chart.Interval{Start: in.CreatedAt}
		if in.EndedAt != nil {
			iv.End = *in.EndedAt
		}
		ivs = append(ivs, iv)
	}
	if len(ivs) != 3 {
		t.Fatalf("the store lists %d instances of the limit, want 3", len(ivs))
	}
	key := cost.LimitKey("local", "local", "local.small", false)

	b := newBrowser(t, c.URL)
	b.signIn(c.Token)
	b.click("the Usage link", `nav a[href="/usage"]`)
	panel := fmt.Sprintf(`#instances-chart svg .panel[data-key="%s"]`, key)
	b.wait("the limit's panel", fmt.Sprintf(`document.querySelector(%s) !== null`, js(panel)))

	// The last 24 hours: every record is in them.
	eval[bool](b, `(() => { const s = document.querySelector("#usage-since"); s.value = "1d"; return s.dispatchEvent(new Event("change")); })()`)
	b.wait("the charts of the last 24 hours", `["instances-chart", "daily-chart"].every((id) => {
		const svg = document.querySelector("#" + id + " svg");
		return svg && (id === "daily-chart" ? svg.querySelectorAll(".bar").length <= 2 : Date.now() - Date.parse(svg.dataset.from) < 25 * 3600e3); })`)
	b.wait("the limit's panel", fmt.Sprintf(`document.querySelector(%s) !== null`, js(panel)))
	window := time.Now().Add(-24 * time.Hour)
	wantStart, want := stepMarks(chart.Steps(ivs), window)
	gotStart, got := chartMarks(b, "#instances-chart", key, "running")
	if gotStart != wantStart || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("the running instances drawn are %s then %v, the records' steps %s then %v", gotStart, got, wantStart, want)
	}
	wantStart, want = stepMarks([]chart.StepPoint{{T: at(0), V: 3}, {T: at(180), V: 1}}, window)
	gotStart, got = chartMarks(b, "#instances-chart", key, "max")
	if gotStart != wantStart || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("the maximum drawn is %s then %v, want %s then %v", gotStart, got, wantStart, want)
	}
	if !eval[bool](b, `(() => { const s = document.querySelector("#instances-chart svg"); const id = s.getAttribute("aria-labelledby").split(" ");
		return s.getAttribute("role") === "img" && document.getElementById(id[0]).textContent !== "" && document.getElementById(id[1]).textContent !== ""; })()`) {
		t.Error("the instances chart has no accessible title and description")
	}

	// Cost per day: the bars add up to the usage table's total, which is
	// the API's.
	var rep api.UsageReport
	getJSON(t, c, "/usage?since=1d&by=user", &rep)
	if rep.Total.Cost <= 0 {
		t.Fatalf("GET /usage total %+v: the instances recorded cost nothing", rep.Total)
	}
	b.wait("the cost bars", `document.querySelector("#daily-chart svg .bar") !== null`)
	bars := eval[float64](b, `[...document.querySelectorAll("#daily-chart svg .bar")].reduce((s, g) => s + Number(g.dataset.total), 0)`)
	if math.Abs(bars-rep.Total.Cost) > 1e-6 {
		t.Errorf("the bars add up to %v, GET /usage's total is %v", bars, rep.Total.Cost)
	}
	b.wait("the usage table's total", `document.querySelector("#usage tfoot tr") !== null`)
	if got, want := eval[string](b, `document.querySelectorAll("#usage tfoot td")[4].textContent`), fmt.Sprintf("$%.2f", rep.Total.Cost); got != want {
		t.Errorf("the table's total cost is %q, want %q", got, want)
	}
	b.do("stack by instance type", chromedp.Click(chromedp.CSS(`input[name="stack"][value="instance-type"]`)))
	b.wait("bars by instance type", `document.querySelector('#daily-chart svg .bar rect[data-series="local.small"]') !== null`)
	eval[bool](b, `(() => { const s = document.querySelector("#usage-by"); s.value = "instance-type"; return s.dispatchEvent(new Event("change")); })()`)
	b.wait("the table by instance type", `document.querySelector('#usage tr[data-key="local.small"]') !== null`)
	b.noOverflow("/usage")
	b.screenshot("usage-laptop")

	// A phone: the charts are drawn again for its width, and fit it.
	b.phone(true)
	b.wait("the charts drawn for a phone", `["instances-chart", "daily-chart"].every((id) => {
		const box = document.getElementById(id); const svg = box.querySelector("svg");
		return svg && Math.abs(Number(svg.getAttribute("width")) - box.clientWidth) <= 1; })`)
	gotStart, got = chartMarks(b, "#instances-chart", key, "running")
	if wantStart, want := stepMarks(chart.Steps(ivs), window); gotStart != wantStart || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("on a phone, the running instances drawn are %s then %v, want %s then %v", gotStart, got, wantStart, want)
	}
	b.noOverflow("/usage on a phone")
	b.screenshot("usage-phone")
	b.phone(false)

	// A run's timeline: its job queued, downloading and running, at the
	// times the API says.
	c.startRunner("usage-runner")
	dir := project(t, map[string]string{".dstack/workflows.yaml": `workflows:
  - name: hello
    provider: bash
    commands:
      - echo hello
      - sleep 1
`})
	r := c.dstack(dir, "run", "-d", "hello")
	if r.code != 0 {
		t.Fatalf("%s", r)
	}
	name := runName(t, r.stdout+r.stderr)
	run := c.waitStatus(name, api.StatusDone)
	b.open("/runs/" + name)
	b.wait("the timeline", `document.querySelector('#timeline svg rect[data-phase="running"]') !== null`)
	job := run.Jobs[0]
	spans := eval[[]map[string]string](b, `[...document.querySelectorAll("#timeline svg rect[data-phase]")].map((r) => ({phase: r.dataset.phase, from: r.dataset.from, to: r.dataset.to}))`)
	phases := map[string]map[string]string{}
	for _, s := range spans {
		phases[s["phase"]] = s
	}
	for _, p := range []string{"queued", "downloading", "running"} {
		if phases[p] == nil {
			t.Errorf("the timeline has no %s span: %v", p, spans)
		}
	}
	if s := phases["running"]; s != nil && job.StartedAt != nil && job.FinishedAt != nil {
		if s["from"] != job.StartedAt.UTC().Format(time.RFC3339Nano) || s["to"] != job.FinishedAt.UTC().Format(time.RFC3339Nano) {
			t.Errorf("running is drawn from %s to %s; the job started at %v and finished at %v", s["from"], s["to"], job.StartedAt, job.FinishedAt)
		}
	}
	if s := phases["queued"]; s != nil && s["from"] != run.SubmittedAt.UTC().Format(time.RFC3339Nano) {
		t.Errorf("queued is drawn from %s; the run was submitted at %v", s["from"], run.SubmittedAt)
	}
	b.screenshot("run-timeline-laptop")
	b.phone(true)
	b.wait("the timeline drawn for a phone", `(() => { const box = document.getElementById("timeline"); const svg = box.querySelector("svg");
		return svg && Math.abs(Number(svg.getAttribute("width")) - box.clientWidth) <= 1; })()`)
	b.noOverflow("the run page on a phone")
	b.screenshot("run-timeline-phone")
}

// getJSON decodes the answer to GET path (under /api/v1) as the admin.
func getJSON(t *testing.T, c *cluster, path string, v any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, c.URL+api.PathPrefix+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", path, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
}
