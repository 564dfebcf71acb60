package cli

import (
	"context"
	"fmt"
	"strings"
	"time"
	"unicode"

	"github.com/spf13/cobra"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/client"
)

// psDefaultLimit is how many runs `dstack ps` shows in its table without
// --limit or -a.
const psDefaultLimit = 20

func (e *Env) psCmd() *cobra.Command {
	var (
		all, asJSON bool
		limit       int
	)
	cmd := &cobra.Command{
		Use:     "ps [-a] [--limit N] [--json]",
		Aliases: []string{"status"},
		Short:   "List runs",
		Long: `List runs, newest first: unfinished and recently finished ones, or all of
them with -a. RUNNER is the runner of the run's current (or last) job;
DURATION runs from the first job's start to the run's end, or to now.
COST is what the run's jobs cost on on-demand instances: the instance's
list price (spot: the spot price at launch) times the time each job held
it; "-" when it ran on self-hosted runners only (docs/cost.md). --json
carries it in each run's and job's "cost" with its currency.
Below the table, each pending job that waits says why (no runner or
on-demand limit fits it, its limit is at its maximum...), and a job whose
log the server could not store in full says "log incomplete: N bytes not
stored" until its runner has sent the rest, and a job with a checkpoint
(workflow key checkpoints:) shows its latest: when it was saved, by
which attempt, its files and size.

The table shows the newest 20 runs unless -a (all of them) or --limit N
(the newest N). --json prints every run asked for as one JSON array, as
scripts expect, unless --limit cuts it. A listing that was cut says so on
stderr, so that the output itself stays the runs.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			n := 0 // all
			switch {
			case cmd.Flags().Changed("limit"):
				if limit < 1 {
					return usagef("--limit %d: give a number of runs of at least 1, or -a for all of them", limit)
				}
				n = limit
			case !all && !asJSON:
				n = psDefaultLimit
			}
			return e.ps(cmd.Context(), all, n, asJSON)
		},
	}
	cmd.Flags().BoolVarP(&all, "all", "a", false, "list all runs, not only unfinished and recent ones")
	cmd.Flags().IntVar(&limit, "limit", psDefaultLimit, "list the newest N runs at most (default: 20 in the table; all with -a or --json)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON array of runs")
	return cmd
}

// listRuns reads runs page by page, limit of them at most (0: all); cut
// says that more runs follow.
func listRuns(ctx context.Context, c *apiClient, all bool, limit int) (runs []api.Run, cut bool, err error) {
	o := client.RunListOptions{All: all}
	for {
		if limit > 0 {
			o.Limit = min(limit-len(runs), psPage)
		}
		page, next, err := c.RunListPage(ctx, o)
		if err != nil {
			return nil, false, err
		}
		runs = append(runs, page...)
		if next == "" {
			return runs, false, nil
		}
		if limit > 0 && len(runs) >= limit {
			return runs, true, nil
		}
		o.After = next
	}
}

// psPage is how many runs `dstack ps` asks for at once.
const psPage = 1000

func (e *Env) ps(ctx context.Context, all bool, limit int, asJSON bool) error {
	c, err := e.client()
	if err != nil {
		return err
	}
	runs, cut, err := listRuns(ctx, c, all, limit)
	if err != nil {
		return c.explain(err)
	}
	if cut {
		more := "`dstack ps --limit N` lists more"
		if !all {
			more += ", `dstack ps -a` all of them"
		}
		defer fmt.Fprintf(e.Stderr, "Showing the newest %d runs, and more match: %s.\n", len(runs), more)
	}
	if asJSON {
		return writeJSON(e.Stdout, runs)
	}
	if len(runs) == 0 && !all {
		fmt.Fprintln(e.Stderr, "No unfinished or recent runs; `dstack ps -a` lists all of them, `dstack run WORKFLOW` starts one.")
		return nil
	}
	now := e.Now()
	t := newTable(e.Stdout, "run", "workflow", "status", "runner", "submitted", "duration", "cost")
	for _, r := range runs {
		status := string(r.Status)
		if runLogMissing(&r) > 0 {
			status += " (log incomplete)"
		}
		t.row(r.Name, r.Workflow, status, runRunner(&r), formatAgo(now, r.SubmittedAt), runDuration(&r, now), formatCost(r.Cost))
	}
	if err := t.flush(); err != nil {
		return err
	}
	// Why pending jobs wait (no runner fits, a limit is at its maximum...),
	// under the table: the reasons are too long for a column.
	first := true
	for _, r := range runs {
		for _, j := range r.Jobs {
			if j.Status != api.StatusPending || j.StatusReason == "" {
				continue
			}
			if first {
				fmt.Fprintln(e.Stdout)
				first = false
			}
			fmt.Fprintf(e.Stdout, "%s %s is pending: %s\n", r.Name, j.Workflow, oneLine(j.StatusReason))
		}
	}
	// The latest checkpoint of each job that has one.
	for _, r := range runs {
		for _, j := range r.Jobs {
			if j.Checkpoint == nil {
				continue
			}
			if first {
				fmt.Fprintln(e.Stdout)
				first = false
			}
			fmt.Fprintf(e.Stdout, "%s %s: %s\n", r.Name, j.Workflow, checkpointLine(j.Checkpoint, now))
		}
	}
	// Logs the server could not store in full (its disk was full).
	for _, r := range runs {
		for _, j := range r.Jobs {
			if j.LogMissing <= 0 {
				continue
			}
			if first {
				fmt.Fprintln(e.Stdout)
				first = false
			}
			fmt.Fprintf(e.Stdout, "%s %s: %s\n", r.Name, j.Workflow, logIncomplete(j.LogMissing))
		}
	}
	return nil
}

// runLogMissing is how many bytes the logs of a run's jobs lack.
func runLogMissing(r *api.Run) int64 {
	var n int64
	for _, j := range r.Jobs {
		n += j.LogMissing
	}
	return n
}

// logIncomplete says that a job's log lacks n bytes, and why.
func logIncomplete(n int64) string {
	return fmt.Sprintf("log incomplete: %d bytes not stored (the server's disk was full; the runner keeps them and sends them as soon as the server has room)", n)
}

// oneLine replaces the control characters of s (newlines, tabs) by spaces.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
}

// runRunner is the runner of the run's active job, else of its last job
// that had one.
func runRunner(r *api.Run) string {
	last := ""
	for _, j := range r.Jobs {
		name := j.RunnerName
		if name == "" {
			name = j.RunnerID
		}
		if j.Status.Active() && name != "" {
			return name
		}
		if name != "" {
			last = name
		}
	}
	return last
}

// runDuration is from the first job's start to the run's end, or to now.
func runDuration(r *api.Run, now time.Time) string {
	var start *time.Time
	var end *time.Time
	for _, j := range r.Jobs {
		if j.StartedAt != nil && (start == nil || j.StartedAt.Before(*start)) {
			start = j.StartedAt
		}
		if j.FinishedAt != nil && (end == nil || j.FinishedAt.After(*end)) {
			end = j.FinishedAt
		}
	}
	if start == nil {
		return ""
	}
	if r.FinishedAt != nil {
		end = r.FinishedAt
	} else if !r.Status.Finished() {
		end = &now
	}
	if end == nil {
		end = &now
	}
	return formatDuration(end.Sub(*start))
}

// checkpointLine describes a job's latest checkpoint in a line.
func checkpointLine(c *api.Checkpoint, now time.Time) string {
	return fmt.Sprintf("checkpoint saved %s by attempt %d (%d files, %s)", formatAgo(now, c.CreatedAt), c.Attempt+1, c.Files, formatBytes(c.Size))
}
