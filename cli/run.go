package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/client"
	"github.com/dstackai/dstack/codearchive"
	"github.com/dstackai/dstack/codearchive/pack"
	"github.com/dstackai/dstack/workflow"
)

// DefaultMaxCodeSize is the most file content (uncompressed) of the working
// directory that `dstack run` uploads, unless --max-code-size or
// DSTACK_MAX_CODE_SIZE says otherwise.
const DefaultMaxCodeSize int64 = 256 << 20

func (e *Env) runCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "run [--dir DIR] [--max-code-size SIZE] [--wait-server DURATION] [-d [--json]] (WORKFLOW [--VAR VALUE]... | --resume RUN)",
		Short: "Run a workflow and follow its logs",
		Long: `Run a workflow of .dstack/workflows.yaml, with every workflow it depends on.

The working directory is uploaded as the jobs' code (honouring .gitignore and
.dstackignore), the run is submitted, and its logs are followed until it ends;
the exit code is the run's (see Exit codes). With several jobs, a line such
as "==> prepare (job 1/2)" on stderr heads each job's logs.

Variables of the workflows are set after the workflow's name, as --NAME VALUE
or --NAME=VALUE. --dir, which says where the workflow is, goes before the
workflow's name; --max-code-size, --wait-server, -d/--detach and -h/--help
work anywhere.
Before uploading, the code is checked against the server's own limit
(` + "`dstack server --max-code-size`" + `), which takes sizes as run does (400MB, 1GiB).

-d --json prints the submitted run as JSON on stdout, as ` + "`dstack ps --json`" + `
prints each run; --json goes before the workflow's name (after it, where
no value follows it).

--resume RUN runs again the jobs of a stopped or failed run that are not
done, as their next attempt, each starting from its latest checkpoint
(workflow key checkpoints:, restored into the working directory before its
commands start, with DSTACK_RESUMED=1); done jobs stay done. The run keeps
its name, code and variables, and is followed as a new one.

Ctrl-C stops following the run, not the run: ` + "`dstack logs RUN -f`" + ` follows it
again and ` + "`dstack stop RUN`" + ` stops it. The exit code is then 130.

A server that goes away while the run is followed (a restart, a network cut)
is tried again with backoff for up to --wait-server (10m): the run goes on
without this command, which says so once on stderr and picks the logs up
where they stopped when the server answers again.

Exit codes:
  0      the run is done
  N      the run failed: N is the failing job's exit code (1 to 255)
  1      the run failed, stopped or was aborted without an exit code, or an
         error (the message says which)
  2      a usage error
  3      the server could not be reached for --wait-server; the run goes on:
         follow it again with ` + "`dstack logs RUN -f`" + `
  130    Ctrl-C stopped following; the run goes on`,
		Example: `  dstack run train
  dstack run train --epochs 20 --lr=0.01
  dstack run -d train
  dstack run -d --json train
  dstack run --resume bold-otter-12`,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			ra, err := parseRunArgs(args)
			if err != nil {
				return err
			}
			if ra.Help {
				return cmd.Help()
			}
			return e.run(cmd.Context(), ra)
		},
	}
	// These flags are for --help only: parseRunArgs reads the command line.
	cmd.Flags().BoolP("detach", "d", false, "submit the run and return without following it")
	cmd.Flags().Bool("json", false, "with -d, print the submitted run as JSON")
	cmd.Flags().String("dir", "", "the project's directory (default: the current one)")
	cmd.Flags().String("max-code-size", "256MiB", "the most file content of the working directory to upload (env DSTACK_MAX_CODE_SIZE)")
	cmd.Flags().String("resume", "", "run again the jobs of the stopped or failed run RUN that are not done, from their checkpoints")
	cmd.Flags().String("wait-server", DefaultWaitServer.String(), "how long to keep trying a server that went away while following the run before giving up with exit code 3")
	return cmd
}

func (e *Env) maxCodeSize(flag string) (int64, error) {
	if flag != "" {
		n, err := parseSize(flag)
		if err != nil {
			return 0, usagef("--max-code-size: %v", err)
		}
		return n, nil
	}
	if v := e.Getenv("DSTACK_MAX_CODE_SIZE"); v != "" {
		n, err := parseSize(v)
		if err != nil {
			return 0, fmt.Errorf("DSTACK_MAX_CODE_SIZE: %w", err)
		}
		return n, nil
	}
	return DefaultMaxCodeSize, nil
}

func (e *Env) run(ctx context.Context, ra runArgs) error {
	if ra.Resume != "" {
		return e.resume(ctx, ra)
	}
	dir, err := e.projectDir(ra.Dir)
	if err != nil {
		return err
	}
	maxSize, err := e.maxCodeSize(ra.MaxCodeSize)
	if err != nil {
		return err
	}
	wait, err := parseWaitServer(ra.WaitServer)
	if err != nil {
		return err
	}
	wf, err := workflow.Load(dir)
	if err != nil {
		return err
	}
	jobs, err := wf.Resolve(ra.Workflow, ra.Vars)
	if err != nil {
		return err
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	// Check the server and the token before packing, which can take a while.
	if _, err := c.Me(ctx); err != nil {
		return c.explain(err)
	}
	limit := serverCodeLimit(ctx, c)
	archive, size, err := packCode(ctx, dir, maxSize)
	if err != nil {
		return err
	}
	defer func() {
		_ = archive.Close()
		_ = os.Remove(archive.Name())
	}()
	if err := checkCodeSize(dir, size, limit); err != nil {
		return err
	}
	if !ra.Detach {
		fmt.Fprintf(e.Stderr, "Uploading the code (%s)...\n", formatBytes(size))
	}
	up, err := c.CodeUpload(ctx, archive)
	if err != nil {
		if client.IsCode(err, api.CodeTooLarge) {
			return fmt.Errorf("the server refused the code: %w", err) // the server says how to fix it
		}
		return c.explain(err)
	}
	run, err := c.RunSubmit(ctx, api.RunSubmitRequest{Workflow: ra.Workflow, CodeID: up.CodeID, Jobs: jobs})
	if err != nil {
		return c.explain(err)
	}
	if ra.Detach {
		if ra.JSON {
			if err := writeJSON(e.Stdout, run); err != nil {
				return err
			}
		} else {
			fmt.Fprintf(e.Stdout, "RUN %s submitted\n", run.Name)
		}
		fmt.Fprintf(e.Stderr, "Follow it with `dstack logs %s -f`, stop it with `dstack stop %s`.\n", run.Name, run.Name)
		return nil
	}
	fmt.Fprintf(e.Stderr, "RUN %s submitted (%s)\n", run.Name, describeJobs(run))
	for _, j := range run.Jobs {
		for _, d := range j.Spec.DependsOnTags {
			fmt.Fprintf(e.Stderr, "==> %s gets the artifacts of %s from run %s (tag %s)\n", j.Workflow, d.Workflow, d.RunName, d.Tag)
		}
	}
	return e.follow(ctx, c, run, wait)
}

// resume runs a finished run's jobs that are not done again, from their
// checkpoints, and follows it as run does a new one.
func (e *Env) resume(ctx context.Context, ra runArgs) error {
	wait, err := parseWaitServer(ra.WaitServer)
	if err != nil {
		return err
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	run, err := c.RunResume(ctx, ra.Resume)
	if err != nil {
		return c.runErr(ra.Resume, err)
	}
	var resumed []string
	for _, j := range run.Jobs {
		if j.Status == api.StatusDone {
			continue
		}
		from := "from the beginning: no checkpoint"
		if j.Checkpoint != nil {
			from = checkpointLine(j.Checkpoint, e.Now())
		}
		resumed = append(resumed, fmt.Sprintf("%s (attempt %d, %s)", j.Workflow, j.Attempt+1, from))
	}
	if ra.Detach {
		if ra.JSON {
			if err := writeJSON(e.Stdout, run); err != nil {
				return err
			}
		} else {
			fmt.Fprintf(e.Stdout, "RUN %s resumed\n", run.Name)
		}
		fmt.Fprintf(e.Stderr, "Resuming %s. Follow it with `dstack logs %s -f`.\n", strings.Join(resumed, ", "), run.Name)
		return nil
	}
	fmt.Fprintf(e.Stderr, "RUN %s resumed: %s\n", run.Name, strings.Join(resumed, ", "))
	return e.follow(ctx, c, run, wait)
}

// describeJobs is "train", or "prepare, train" for a run of several jobs.
func describeJobs(run *api.Run) string {
	names := make([]string, len(run.Jobs))
	for i, j := range run.Jobs {
		names[i] = j.Workflow
	}
	if len(names) == 0 {
		return run.Workflow
	}
	return strings.Join(names, ", ")
}

// packCode packs dir into a temporary file, positioned at its start.
func packCode(ctx context.Context, dir string, maxSize int64) (*os.File, int64, error) {
	f, err := os.CreateTemp("", "dstack-code-*.tar.gz")
	if err != nil {
		return nil, 0, fmt.Errorf("pack the code: %w", err)
	}
	fail := func(err error) (*os.File, int64, error) {
		_ = f.Close()
		_ = os.Remove(f.Name())
		return nil, 0, err
	}
	if _, err := pack.Dir(ctx, dir, f, pack.Options{MaxSize: maxSize}); err != nil {
		if errors.Is(err, codearchive.ErrTooLarge) {
			return fail(fmt.Errorf("%w; or raise the limit with `dstack run --max-code-size SIZE` or DSTACK_MAX_CODE_SIZE", err))
		}
		return fail(fmt.Errorf("pack the code of %s: %w", dir, err))
	}
	size, err := f.Seek(0, io.SeekCurrent)
	if err != nil {
		return fail(err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fail(err)
	}
	return f, size, nil
}

// follow streams a submitted run's logs until it ends and reports how it
// ended. Ctrl-C stops following, not the run.
func (e *Env) follow(ctx context.Context, c *apiClient, run *api.Run, wait time.Duration) error {
	ictx, stop := e.Interrupt(ctx)
	defer stop()
	// The status watcher and the log headers share stderr.
	fe := *e
	fe.Stderr = &syncWriter{w: e.Stderr}
	wctx, cancelWatch := context.WithCancel(ictx)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		fe.watchStatus(wctx, c, run.Name)
	}()
	sw := fe.newServerWait(c, run.Name, wait)
	err := fe.streamRun(ictx, c, run, true, time.Time{}, sw)
	var final *api.Run
	if err == nil {
		final, err = waitRun(ictx, c, run.Name, sw)
	}
	cancelWatch()
	<-watched
	if ictx.Err() != nil && ctx.Err() == nil {
		fmt.Fprintf(e.Stderr, "\nStopped following run %s; it goes on.\n", run.Name)
		fmt.Fprintf(e.Stderr, "Follow it again with `dstack logs %s -f`, stop it with `dstack stop %s`.\n", run.Name, run.Name)
		return &exitError{code: ExitInterrupted}
	}
	if err != nil {
		return err
	}
	return e.reportRun(final)
}

// waitRun polls a run until it is finished; sw says how long it keeps
// trying a server it lost.
func waitRun(ctx context.Context, c *apiClient, name string, sw *serverWait) (*api.Run, error) {
	bo := client.NewBackoff(100*time.Millisecond, 2*time.Second)
	for {
		run, err := c.RunGet(ctx, name)
		switch {
		case err == nil:
			sw.ok()
			if run.Status.Finished() {
				return run, nil
			}
		case ctx.Err() != nil:
			return nil, ctx.Err()
		case !client.Retryable(err):
			return nil, c.runErr(name, err)
		default:
			if xerr := sw.failed(err); xerr != nil {
				return nil, xerr
			}
		}
		if err := bo.Wait(ctx, err); err != nil {
			return nil, err
		}
	}
}

// reportRun prints how a finished run ended, and turns a failure into the
// command's exit code.
func (e *Env) reportRun(run *api.Run) error {
	dur := ""
	if run.FinishedAt != nil {
		dur = " in " + formatDuration(run.FinishedAt.Sub(run.SubmittedAt))
	}
	e.sayLogIncomplete(run)
	if run.Status == api.StatusDone {
		fmt.Fprintf(e.Stderr, "RUN %s done%s\n", run.Name, dur)
		return nil
	}
	code, why := runFailure(run)
	return &exitError{code: code, msg: fmt.Sprintf("run %s %s%s: %s", run.Name, run.Status, dur, why)}
}

// runFailure is the exit code of a run that did not end done, and why.
func runFailure(run *api.Run) (int, string) {
	var job *api.Job
	for i := range run.Jobs {
		if run.Jobs[i].Status == api.StatusFailed {
			job = &run.Jobs[i]
			break
		}
	}
	if job == nil {
		for i := range run.Jobs {
			if run.Jobs[i].Status == run.Status {
				job = &run.Jobs[i]
				break
			}
		}
	}
	if job == nil {
		return ExitError, "see `dstack logs " + run.Name + "`"
	}
	code := ExitError
	var why string
	switch {
	case job.ExitCode != nil && *job.ExitCode != 0:
		why = fmt.Sprintf("%s exited with code %d", job.Workflow, *job.ExitCode)
		if *job.ExitCode > 0 && *job.ExitCode < 256 {
			code = *job.ExitCode
		}
	case job.Status == api.StatusStopped, job.Status == api.StatusAborted:
		why = fmt.Sprintf("%s was %s", job.Workflow, job.Status)
	default:
		why = fmt.Sprintf("%s %s", job.Workflow, job.Status)
	}
	if job.StatusReason != "" {
		why += " (" + job.StatusReason + ")"
	}
	return code, why
}

// statusPoll is how often watchStatus looks at a followed run.
const statusPoll = 2 * time.Second

// watchStatus says on stderr why a followed run shows no output: a job has
// waited for a runner or an instance for a while, or was interrupted and
// requeued. It returns when ctx ends or the run is finished.
func (e *Env) watchStatus(ctx context.Context, c *apiClient, name string) {
	type seen struct {
		status  api.JobStatus
		attempt int
		polls   int    // polls that saw this status
		reason  string // the pending reason last told
	}
	last := map[string]*seen{}
	t := time.NewTicker(statusPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		run, err := c.RunGet(ctx, name)
		if err != nil {
			continue // following reports errors; this only adds notes
		}
		for _, j := range run.Jobs {
			s := last[j.ID]
			switch {
			case s == nil:
				s = &seen{status: j.Status, attempt: j.Attempt}
				last[j.ID] = s
			case j.Attempt > s.attempt || (j.Status == api.StatusInterrupted && s.status != j.Status):
				why := ""
				if j.StatusReason != "" {
					why = " (" + j.StatusReason + ")"
				}
				// Attempt counts from 0: the first requeue starts attempt 2.
				fmt.Fprintf(e.Stderr, "==> %s was interrupted%s; it is queued again, attempt %d\n", j.Workflow, why, j.Attempt+1)
				*s = seen{status: j.Status, attempt: j.Attempt}
			case j.Status != s.status:
				*s = seen{status: j.Status, attempt: j.Attempt}
			}
			s.polls++
			if j.Status == api.StatusPending && s.polls > 2 && j.StatusReason != s.reason && j.StatusReason != "" {
				// Why it waits changed (the autoscaler's word): tell again.
				fmt.Fprintf(e.Stderr, "==> %s is waiting: %s\n", j.Workflow, j.StatusReason)
				s.reason = j.StatusReason
			}
			if s.polls != 2 {
				continue // tell once, and only about a state that lasts
			}
			switch j.Status {
			case api.StatusPending:
				if j.StatusReason != "" {
					fmt.Fprintf(e.Stderr, "==> %s is waiting: %s\n", j.Workflow, j.StatusReason)
					s.reason = j.StatusReason
					break
				}
				fmt.Fprintf(e.Stderr, "==> %s is waiting for a runner that fits it (`dstack runners` lists them)\n", j.Workflow)
			case api.StatusProvisioning:
				fmt.Fprintf(e.Stderr, "==> %s is waiting for an instance to start\n", j.Workflow)
			}
		}
		if run.Status.Finished() {
			return
		}
	}
}

// syncWriter serialises writes to w.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
