package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/client"
)

func (e *Env) logsCmd() *cobra.Command {
	var follow bool
	var since, waitServer string
	cmd := &cobra.Command{
		Use:   "logs RUN [-f] [--since 10m|TIME] [--wait-server DURATION]",
		Short: "Print a run's logs",
		Long: `Print the logs of every job of a run, dependencies first. With several jobs, a
line such as "==> prepare (job 1/2)" on stderr heads each job's logs.

-f follows the logs until the run ends. --since prints only what was written
after a time: a duration back from now (10m, 1h30m) or a time (RFC 3339 such
as 2024-05-01T10:00:00Z, or 2024-05-01 in local time).

While following, a server that goes away (a restart, a network cut) is
tried again with backoff for up to --wait-server (10m); the run goes on
meanwhile. Giving up exits with code 3.`,
		Args: exactArgs("RUN"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var from time.Time
			if since != "" {
				t, err := parseSince(e.Now(), since)
				if err != nil {
					return usagef("%v", err)
				}
				from = t
			}
			wait, err := parseWaitServer(waitServer)
			if err != nil {
				return err
			}
			return e.logs(cmd.Context(), args[0], follow, from, wait)
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "follow the logs until the run ends")
	cmd.Flags().StringVar(&waitServer, "wait-server", DefaultWaitServer.String(), "with -f: how long to keep trying a server that went away before giving up with exit code 3")
	cmd.Flags().StringVar(&since, "since", "", "only output written since: a duration such as 10m, or a time")
	return cmd
}

func (e *Env) logs(ctx context.Context, name string, follow bool, since time.Time, wait time.Duration) error {
	c, err := e.client()
	if err != nil {
		return err
	}
	run, err := c.RunGet(ctx, name)
	if err != nil {
		return c.runErr(name, err)
	}
	sw := e.newServerWait(c, name, wait)
	if err := e.streamRun(ctx, c, run, follow, since, sw); err != nil {
		return err
	}
	if !follow {
		e.sayLogIncomplete(run)
		return nil
	}
	final, err := waitRun(ctx, c, name, sw)
	if err != nil {
		return err
	}
	e.sayLogIncomplete(final)
	if final.Status == api.StatusDone {
		fmt.Fprintf(e.Stderr, "RUN %s done\n", name)
	} else {
		_, why := runFailure(final)
		fmt.Fprintf(e.Stderr, "RUN %s %s: %s\n", name, final.Status, why)
	}
	return nil
}

// sayLogIncomplete tells, on stderr, of each job of run whose log the
// server could not store in full.
func (e *Env) sayLogIncomplete(run *api.Run) {
	for _, j := range run.Jobs {
		if j.LogMissing > 0 {
			fmt.Fprintf(e.Stderr, "%s: %s\n", j.Workflow, logIncomplete(j.LogMissing))
		}
	}
}

// streamRun writes the logs of a run's jobs to stdout one job after the
// other, in the run's order (dependencies first).
func (e *Env) streamRun(ctx context.Context, c *apiClient, run *api.Run, follow bool, since time.Time, sw *serverWait) error {
	for i, job := range run.Jobs {
		if len(run.Jobs) > 1 {
			fmt.Fprintf(e.Stderr, "==> %s (job %d/%d)\n", job.Workflow, i+1, len(run.Jobs))
		}
		if err := e.streamJob(ctx, c, job, follow, since, sw); err != nil {
			return err
		}
	}
	return nil
}

// streamJob writes one job's log to stdout. When following, it reconnects
// after a broken stream, from where it left off, until the job is finished;
// sw says how long it keeps trying a server it lost.
func (e *Env) streamJob(ctx context.Context, c *apiClient, job api.Job, follow bool, since time.Time, sw *serverWait) error {
	out := &errWriter{w: e.Stdout}
	var received int64
	bo := client.NewBackoff(200*time.Millisecond, 5*time.Second)
	for {
		o := client.LogOptions{Follow: follow}
		var skip int64
		if since.IsZero() {
			o.Offset = received
		} else {
			// The server filters by time; the same filter gives the same
			// bytes again, so skip what was already written.
			o.Since, skip = since, received
		}
		n, err := e.copyLog(ctx, c, job.ID, o, skip, out)
		received += n
		switch {
		case out.err != nil:
			return fmt.Errorf("write the logs: %w", out.err)
		case ctx.Err() != nil:
			return ctx.Err()
		case !follow:
			if err != nil {
				return c.explain(err)
			}
			return nil
		case err != nil && !client.Retryable(err):
			return c.explain(err)
		}
		if n > 0 {
			sw.ok()
		}
		switch {
		case err == nil:
			// The stream ended: normally because the job is finished, but
			// a server may also end a long stream; then go on from here.
			sw.ok()
			run, gerr := c.RunGet(ctx, job.RunName)
			switch {
			case gerr == nil:
				if jobFinished(run, job.ID) {
					return nil
				}
			case ctx.Err() != nil:
				return ctx.Err()
			case !client.Retryable(gerr):
				return c.runErr(job.RunName, gerr)
			default:
				err = gerr // its Retry-After spaces the next try
				if xerr := sw.failed(gerr); xerr != nil {
					return xerr
				}
			}
		case n == 0:
			if xerr := sw.failed(err); xerr != nil {
				return xerr
			}
		}
		if n > 0 {
			// It broke off after some output: reconnect at once.
			bo.Reset()
			continue
		}
		if err := bo.Wait(ctx, err); err != nil {
			return err
		}
	}
}

// copyLog copies one log stream to out, skipping its first skip bytes, and
// says how many bytes it wrote.
func (e *Env) copyLog(ctx context.Context, c *apiClient, jobID string, o client.LogOptions, skip int64, out io.Writer) (int64, error) {
	rc, err := c.JobLogs(ctx, jobID, o)
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	if skip > 0 {
		if _, err := io.CopyN(io.Discard, rc, skip); err != nil {
			if errors.Is(err, io.EOF) {
				return 0, nil
			}
			return 0, err
		}
	}
	return io.Copy(out, rc)
}

func jobFinished(run *api.Run, jobID string) bool {
	for _, j := range run.Jobs {
		if j.ID == jobID {
			return j.Status.Finished()
		}
	}
	return run.Status.Finished()
}

// errWriter remembers the first error writing to w, so that a failed
// write (a closed pipe) is told apart from a broken stream.
type errWriter struct {
	w   io.Writer
	err error
}

func (w *errWriter) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	n, err := w.w.Write(p)
	if err != nil {
		w.err = err
	}
	return n, err
}
