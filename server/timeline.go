package server

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/server/ui/chart"
	"github.com/dstackai/dstack/store"
)

// A run's timeline on its page: each job's phases, from what the store
// records of it.
//
//   - waiting: from the run's submission until the jobs it depends on were
//     done (jobs.submitted_at to jobs.queued_at);
//   - queued: from then until a runner claimed it (jobs.claimed_at), or it
//     ended unclaimed; for a requeued attempt, from the end of the attempt
//     before (its instance hold, instance_holds), else it is inferred;
//   - provisioning: the status is not time-stamped; it is inferred from the
//     launch of the on-demand instance the attempt ran on (instances.
//     created_at), when that instance was launched while the job was queued,
//     until the claim;
//   - downloading: from the claim until the job started (jobs.started_at);
//   - running: from the start until the job ended (jobs.finished_at);
//   - earlier attempt: each attempt before the current one that held an
//     on-demand instance (instance_holds).
//
// The switch from running to uploading is not recorded (the job's row keeps
// only its start and its end): the running span of a job that uploads
// artifacts includes the upload, and a job uploading now shows so in its
// label. Spans whose times are inferred are drawn lighter and say so.

// Timeline phases, in the legend's order.
const (
	phaseWaiting      = "waiting"
	phaseQueued       = "queued"
	phaseProvisioning = "provisioning"
	phaseDownloading  = "downloading"
	phaseRunning      = "running"
	phaseEarlier      = "earlier attempt"
)

var timelinePhases = []chart.Phase{
	{Name: phaseWaiting, Color: "#b8bfcc"},
	{Name: phaseQueued, Color: "#e0a526"},
	{Name: phaseProvisioning, Color: "#7b52c9"},
	{Name: phaseDownloading, Color: "#1b9aa8"},
	{Name: phaseRunning, Color: "#2a9d54"},
	{Name: phaseEarlier, Color: "#c43c5c"},
}

// timelineInput is what a run's timeline is drawn from.
type timelineInput struct {
	Run *store.Run
	// Holds are the run's instance holds, every attempt's.
	Holds []api.Hold
	// Instances are the on-demand instances the holds name, and any
	// launched for a job of the run that has not claimed it yet, by ID.
	Instances map[string]*store.Instance
	Now       time.Time
}

// runTimeline lays out a run's jobs as timeline rows.
func runTimeline(in timelineInput, width int) chart.Timeline {
	run := in.Run
	c := chart.Timeline{
		ID: "run-timeline", Title: "Timeline of run " + run.Name, Phases: timelinePhases,
		Empty: "No job yet.", Width: width, From: run.SubmittedAt, To: in.Now,
	}
	end := run.SubmittedAt
	allDone := true
	var desc []string
	for _, j := range run.Jobs {
		row := jobTimeline(j, in)
		for _, sp := range row.Spans {
			end = maxTime(end, sp.To)
		}
		if j.FinishedAt == nil {
			allDone = false
		}
		c.Rows = append(c.Rows, row)
		desc = append(desc, describeRow(row))
	}
	if allDone {
		c.To = end
	}
	// The legend names the phases drawn.
	used := map[string]bool{}
	for _, r := range c.Rows {
		for _, sp := range r.Spans {
			used[sp.Phase] = true
		}
	}
	c.Phases = slices.DeleteFunc(slices.Clone(timelinePhases), func(p chart.Phase) bool { return !used[p.Name] })
	if !c.To.After(c.From) {
		c.To = c.From.Add(time.Second)
	}
	c.Desc = "Phases of each job of the run over time, in UTC. " + strings.Join(desc, " ")
	return c
}

func describeRow(r chart.TimelineRow) string {
	parts := make([]string, len(r.Spans))
	for i, sp := range r.Spans {
		parts[i] = fmt.Sprintf("%s %s", sp.Phase, chart.Duration(sp.To.Sub(sp.From)))
	}
	if len(parts) == 0 {
		return r.Label + ": not started."
	}
	return r.Label + ": " + strings.Join(parts, ", ") + "."
}

// jobTimeline is one job's row: its earlier attempts, then the phases of
// its current one.
func jobTimeline(j *store.Job, in timelineInput) chart.TimelineRow {
	now := in.Now
	row := chart.TimelineRow{Label: j.Workflow, Key: j.ID}
	if j.Attempt > 0 {
		row.Label = fmt.Sprintf("%s (attempt %d)", j.Workflow, j.Attempt+1)
	}
	if j.Status == api.StatusUploading {
		row.Label += " (uploading)"
	}
	add := func(phase string, from, to time.Time, derived bool) {
		if to.After(from) {
			row.Spans = append(row.Spans, chart.Span{Phase: phase, From: from, To: to, Derived: derived})
		}
	}
	// endOr is the job's end, or now while it goes on.
	endOr := func() time.Time {
		if j.FinishedAt != nil {
			return *j.FinishedAt
		}
		return now
	}

	var current *api.Hold
	lastEarlier := time.Time{}
	holds := slices.Clone(in.Holds)
	slices.SortFunc(holds, func(a, b api.Hold) int { return a.From.Compare(b.From) })
	for i := range holds {
		h := &holds[i]
		if h.JobID != j.ID {
			continue
		}
		if h.Attempt == j.Attempt {
			current = h
			continue
		}
		to := now
		if h.To != nil {
			to = *h.To
		}
		add(phaseEarlier, h.From, to, false)
		lastEarlier = maxTime(lastEarlier, to)
	}

	queued := j.QueuedAt
	if queued.IsZero() || queued.Before(j.SubmittedAt) {
		queued = j.SubmittedAt
	}
	add(phaseWaiting, j.SubmittedAt, queued, false)
	queuedDerived := false
	if j.Attempt > 0 {
		// Requeued: it joined the queue again when its last attempt ended.
		if !lastEarlier.IsZero() {
			queued = maxTime(queued, lastEarlier)
		}
		queuedDerived = true
	}
	if j.Status == api.StatusSubmitted {
		add(phaseWaiting, j.SubmittedAt, endOr(), false)
		return row
	}

	// The claim ends the queue; an instance launched for the job while it
	// was queued provisioned it until then.
	claimed := endOr()
	if j.ClaimedAt != nil {
		claimed = *j.ClaimedAt
	}
	var inst *store.Instance
	if current != nil {
		inst = in.Instances[current.InstanceID]
	} else if j.ClaimedAt == nil {
		for _, i := range in.Instances {
			if i.JobID == j.ID && i.EndedAt == nil {
				inst = i
			}
		}
	}
	if inst != nil && inst.CreatedAt.After(queued) && inst.CreatedAt.Before(claimed) {
		add(phaseQueued, queued, inst.CreatedAt, queuedDerived)
		add(phaseProvisioning, inst.CreatedAt, claimed, true)
	} else {
		add(phaseQueued, queued, claimed, queuedDerived)
	}
	if j.ClaimedAt == nil {
		return row
	}
	started := endOr()
	if j.StartedAt != nil {
		started = *j.StartedAt
	}
	add(phaseDownloading, *j.ClaimedAt, started, false)
	if j.StartedAt != nil {
		add(phaseRunning, *j.StartedAt, endOr(), false)
	}
	return row
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// handleRunTimeline answers GET /runs/{name}/timeline.svg: the run's
// timeline, for a signed-in browser that may see the run.
func (s *Server) handleRunTimeline(w http.ResponseWriter, r *http.Request) {
	_, u, ok := s.signedIn(w, r)
	if !ok {
		return
	}
	err := func() error {
		run, err := s.userRun(r, u)
		if err != nil {
			return err
		}
		width, err := chartWidth(r)
		if err != nil {
			return err
		}
		in := timelineInput{Run: run, Now: s.cfg.Now(), Instances: map[string]*store.Instance{}}
		rc, err := s.runCost(r.Context(), run)
		if err != nil {
			return err
		}
		for _, jc := range rc.Jobs {
			in.Holds = append(in.Holds, jc.Holds...)
		}
		for _, h := range in.Holds {
			if _, ok := in.Instances[h.InstanceID]; ok {
				continue
			}
			inst, err := s.store.InstanceGet(r.Context(), h.InstanceID)
			if err != nil {
				return fmt.Errorf("read instance %s: %w", h.InstanceID, err)
			}
			in.Instances[inst.ID] = inst
		}
		// Instances launched for jobs that wait for them.
		waiting := false
		for _, j := range run.Jobs {
			waiting = waiting || j.Status == api.StatusProvisioning || j.Status == api.StatusPending
		}
		if waiting {
			live, err := s.store.InstanceList(r.Context(), store.InstanceListParams{UserID: run.UserID, States: []store.InstanceState{store.InstanceLaunching}})
			if err != nil {
				return fmt.Errorf("list instances: %w", err)
			}
			for _, i := range live {
				in.Instances[i.ID] = i
			}
		}
		writeSVG(w, runTimeline(in, width).SVG())
		return nil
	}()
	if err != nil {
		s.writeError(w, r, err)
	}
}
