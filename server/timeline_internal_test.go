package server

import (
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/store"
)

// TestRunTimelinePhases: each job's phases come from its recorded times;
// provisioning from the launch of the instance it ran on; a requeued
// attempt queues from the end of the one before.
func TestRunTimelinePhases(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	at := func(min int) time.Time { return t0.Add(time.Duration(min) * time.Minute) }
	ptr := func(t time.Time) *time.Time { return &t }
	run := &store.Run{Name: "r1", SubmittedAt: at(0), Jobs: []*store.Job{
		// On an instance launched for it at 2, claimed at 5.
		{ID: "a", Workflow: "prepare", Status: api.StatusDone, SubmittedAt: at(0), QueuedAt: at(0),
			ClaimedAt: ptr(at(5)), StartedAt: ptr(at(6)), FinishedAt: ptr(at(10))},
		// Waits for a, then runs on a self-hosted runner; second attempt
		// after its first held an instance from 11 to 12.
		{ID: "b", Workflow: "train", Status: api.StatusRunning, Attempt: 1, SubmittedAt: at(0), QueuedAt: at(10),
			ClaimedAt: ptr(at(14)), StartedAt: ptr(at(15))},
		// Never claimed.
		{ID: "c", Workflow: "report", Status: api.StatusPending, SubmittedAt: at(0), QueuedAt: at(0)},
	}}
	in := timelineInput{Run: run, Now: at(20),
		Holds: []api.Hold{
			{JobID: "a", Attempt: 0, InstanceID: "i1", From: at(5), To: ptr(at(10))},
			{JobID: "b", Attempt: 0, InstanceID: "i2", From: at(11), To: ptr(at(12))},
		},
		Instances: map[string]*store.Instance{"i1": {ID: "i1", CreatedAt: at(2)}, "i2": {ID: "i2", CreatedAt: at(1)}},
	}
	c := runTimeline(in, 600)
	type span struct {
		phase    string
		from, to int
		derived  bool
	}
	want := map[string][]span{
		"a": {{phaseQueued, 0, 2, false}, {phaseProvisioning, 2, 5, true}, {phaseDownloading, 5, 6, false}, {phaseRunning, 6, 10, false}},
		"b": {{phaseEarlier, 11, 12, false}, {phaseWaiting, 0, 10, false}, {phaseQueued, 12, 14, true}, {phaseDownloading, 14, 15, false}, {phaseRunning, 15, 20, false}},
		"c": {{phaseQueued, 0, 20, false}},
	}
	if len(c.Rows) != 3 || !c.To.Equal(at(20)) {
		t.Fatalf("rows %d, to %v", len(c.Rows), c.To)
	}
	for _, row := range c.Rows {
		w := want[row.Key]
		if len(row.Spans) != len(w) {
			t.Errorf("job %s: spans %+v, want %+v", row.Key, row.Spans, w)
			continue
		}
		for i, sp := range row.Spans {
			g := span{sp.Phase, int(sp.From.Sub(t0) / time.Minute), int(sp.To.Sub(t0) / time.Minute), sp.Derived}
			if g != w[i] {
				t.Errorf("job %s span %d: %+v, want %+v", row.Key, i, g, w[i])
			}
		}
	}
	if c.Rows[1].Label != "train (attempt 2)" {
		t.Errorf("label %q", c.Rows[1].Label)
	}
	// Every phase drawn is in the legend.
	legend := map[string]bool{}
	for _, p := range c.Phases {
		legend[p.Name] = true
	}
	for _, row := range c.Rows {
		for _, sp := range row.Spans {
			if !legend[sp.Phase] {
				t.Errorf("phase %q is not in the legend", sp.Phase)
			}
		}
	}
}

// TestRunTimelineFinishedRunEndsAtItsEnd: a finished run's axis ends with
// its last job, not now.
func TestRunTimelineFinishedRunEndsAtItsEnd(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	end := t0.Add(3 * time.Minute)
	claimed := t0.Add(time.Minute)
	run := &store.Run{Name: "r", SubmittedAt: t0, Jobs: []*store.Job{{ID: "a", Workflow: "w", Status: api.StatusFailed,
		SubmittedAt: t0, QueuedAt: t0, ClaimedAt: &claimed, FinishedAt: &end}}}
	c := runTimeline(timelineInput{Run: run, Now: t0.Add(time.Hour)}, 400)
	if !c.To.Equal(end) {
		t.Errorf("axis ends at %v, want %v", c.To, end)
	}
	// Claimed but never started: downloading until the end.
	if sp := c.Rows[0].Spans; len(sp) != 2 || sp[1].Phase != phaseDownloading || !sp[1].To.Equal(end) {
		t.Errorf("spans %+v", sp)
	}
}
