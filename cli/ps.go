package cli

import (
	"context"
	"fmt"
	"strings"
	"time"
	"unicode"

	"github.com/spf13/cobra"

	"github.com/dstackai/dstack/api"
)

func (e *Env) psCmd() *cobra.Command {
	var all, asJSON bool
	cmd := &cobra.Command{
		Use:     "ps [-a] [--json]",
		Aliases: []string{"status"},
		Short:   "List runs",
		Long: `List runs, newest first: unfinished and recently finished ones, or all of
them with -a. RUNNER is the runner of the run's current (or last) job;
DURATION runs from the first job's start to the run's end, or to now.
Below the table, each pending job that waits says why (no runner or
on-demand limit fits it, its limit is at its maximum...), and a job whose
log the server could not store in full says "log incomplete: N bytes not
stored" until its runner has sent the rest.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return e.ps(cmd.Context(), all, asJSON)
		},
	}
	cmd.Flags().BoolVarP(&all, "all", "a", false, "list all runs, not only unfinished and recent ones")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON array of runs")
	return cmd
}

func (e *Env) ps(ctx context.Context, all, asJSON bool) error {
	c, err := e.client()
	if err != nil {
		return err
	}
	runs, err := c.RunList(ctx, all)
	if err != nil {
		return c.explain(err)
	}
	if asJSON {
		return writeJSON(e.Stdout, runs)
	}
	if len(runs) == 0 && !all {
		fmt.Fprintln(e.Stderr, "No unfinished or recent runs; `dstack ps -a` lists all of them, `dstack run WORKFLOW` starts one.")
		return nil
	}
	now := e.Now()
	t := newTable(e.Stdout, "run", "workflow", "status", "runner", "submitted", "duration")
	for _, r := range runs {
		status := string(r.Status)
		if runLogMissing(&r) > 0 {
			status += " (log incomplete)"
		}
		t.row(r.Name, r.Workflow, status, runRunner(&r), formatAgo(now, r.SubmittedAt), runDuration(&r, now))
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
