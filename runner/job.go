package runner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/client"
	"github.com/dstackai/dstack/executor"
	"github.com/dstackai/dstack/jobdir"
)

// job is one assignment in progress.
type job struct {
	r     *Runner
	id    string
	lease int64
	spec  api.JobSpec
	run   string
	// attempt is the job's attempt, from 0 (api.Job.Attempt).
	attempt int
	log     *slog.Logger
	dir     *jobdir.Dir // the working directory, once prepare made it

	// ctx ends when the job is dropped: its lease was lost, or the runner's
	// shutdown ran out of time.
	ctx    context.Context
	cancel context.CancelFunc
	lost   atomic.Bool
	// final is set once the job's final status is being reported: the
	// server then ends the job, and its stop watch's lease_lost that
	// follows is that end, not a loss.
	final atomic.Bool

	stopCh chan api.StopSignal // the user's stop, once
	wg     sync.WaitGroup      // the job's goroutines
	spool  *spool              // the output, once created
	// ship sends the spool; it may outlive the job (see afterJob), under
	// its own context, which shipCancel ends.
	ship       *shipper
	shipCancel context.CancelFunc
	// reported: the server took the job's final status.
	reported atomic.Bool
	// ckpt syncs the job's checkpoints; nil when its workflow has none.
	ckpt *checkpointer
	// restored is the checkpoint the attempt started from, if any.
	restored *api.Checkpoint
	// next is the runner's next assignment, when the server gave one with
	// the final status (api.JobStatusUpdate.Next).
	next *api.Assignment
}

// permanentError marks a failure a retry will not fix.
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

func permanent(err error) error { return permanentError{err} }

// do calls f until it succeeds or fails for good. Transient failures are
// retried with backoff while ctx lasts; a refused credential is replaced
// first; lease_lost drops the job and returns errLeaseLost.
func (j *job) do(ctx context.Context, what string, f func(context.Context, *client.Client) error) error {
	bo := client.NewBackoff(100*time.Millisecond, 3*time.Second)
	for {
		tok := j.r.token()
		err := f(ctx, j.r.client())
		var perm permanentError
		switch {
		case err == nil:
			return nil
		case errors.As(err, &perm):
			return perm.err
		case ctx.Err() != nil:
			return ctx.Err()
		case isLeaseLost(err):
			j.loseLease()
			return errLeaseLost
		case isUnauthenticated(err):
			if !j.r.reauth(ctx, tok) && bo.Wait(ctx, err) != nil {
				return ctx.Err()
			}
			continue
		case !client.Retryable(err):
			return err
		}
		j.log.Warn(what+" failed; retrying", "err", err)
		if bo.Wait(ctx, err) != nil {
			return ctx.Err()
		}
	}
}

// loseLease drops the job: whatever runs for it is killed through ctx.
func (j *job) loseLease() {
	if j.lost.CompareAndSwap(false, true) {
		j.log.Warn("the server gave the job away; dropping it")
	}
	j.cancel()
}

// setStatus reports a state. Only lease loss and the end of ctx stop the
// retries of a transient failure. A next assignment the server gives with
// a final state (u.Next) is kept in j.next.
func (j *job) setStatus(ctx context.Context, u api.JobStatusUpdate) error {
	err := j.do(ctx, "report "+string(u.Status), func(ctx context.Context, c *client.Client) error {
		res, err := c.JobSetStatus(ctx, j.id, j.lease, u)
		if err == nil && res.Next != nil {
			j.next = res.Next
		}
		return err
	})
	if err != nil && !isLeaseLost(err) {
		j.log.Error("report job status", "status", u.Status, "err", err)
	}
	return err
}

// runJob runs an assignment to its end. It returns once the job's final
// status is reported, or the job is dropped, with the runner's next
// assignment when the server gave one with the report.
func (r *Runner) runJob(a *api.Assignment) *api.Assignment {
	j := &job{
		r: r, id: a.Job.ID, lease: a.Lease, spec: a.Job.Spec, run: a.Job.RunName, attempt: a.Job.Attempt,
		log:    r.log.With("job", a.Job.ID, "run", a.Job.RunName, "workflow", a.Job.Workflow),
		stopCh: make(chan api.StopSignal, 1),
	}
	j.ctx, j.cancel = context.WithCancel(r.hardCtx)
	if len(j.spec.Checkpoints) > 0 {
		j.ckpt = newCheckpointer(j)
	}
	r.mu.Lock()
	r.current = j
	r.mu.Unlock()
	r.saveJob(j.id)
	defer func() {
		r.mu.Lock()
		r.current = nil
		r.mu.Unlock()
		r.saveJob("")
	}()
	j.log.Info("job claimed", "lease", a.Lease)
	j.execute()
	j.cancel()
	j.wg.Wait()
	r.afterJob(j)
	if j.dir != nil {
		j.dir.Close()
	}
	if err := r.work.Remove(j.id); err != nil {
		j.log.Warn("remove the working directory", "err", err)
	}
	return j.next
}

// outcome is how a job ended, before artifacts.
type outcome struct {
	status   api.JobStatus
	exitCode *int
	reason   string
	upload   bool // upload the artifacts
}

func (j *job) execute() {
	sp, err := createSpool(j.r.spoolDir(), j.id, j.lease)
	if err != nil {
		j.finishWithoutLog(outcome{status: api.StatusFailed, reason: err.Error()})
		return
	}
	j.spool = sp
	// The job's log on the server may already hold what earlier attempts
	// wrote: the shipper asks where this attempt's output goes first.
	sh := j.r.newJobShipper(sp, j.id, j.lease, j.log)
	sh.onLost = func() {
		// After the end is reported, a refusal only ends the shipping.
		if !j.final.Load() {
			j.loseLease()
		}
	}
	shipCtx, shipCancel := context.WithCancel(j.r.hardCtx)
	j.ship, j.shipCancel = sh, shipCancel
	go sh.run(shipCtx)
	j.wg.Go(j.watchStop)

	out := j.runProcess(sp)
	if j.ctx.Err() != nil {
		return // dropped: nothing more to report
	}
	j.finalCheckpoint(sp, &out)
	if out.upload {
		ctx, cancel := j.uploadContext(sp, &out)
		if ctx != nil {
			j.finishArtifacts(ctx, sp, &out)
		}
		cancel()
		if j.ctx.Err() != nil {
			return
		}
	}
	sp.Close()
	u := api.JobStatusUpdate{Status: out.status, ExitCode: out.exitCode, Reason: out.reason}
	if !sh.wait(j.r.cfg.LogAckTimeout) {
		// The end is reported all the same, with what the log lacks: the
		// shipper goes on, and the server counts it down as it arrives.
		if u.LogUnsent = sh.unsent(); u.LogUnsent > 0 {
			if base := sh.base.Load(); base >= 0 {
				size, _ := sp.state()
				u.LogEnd = base + size
			}
			j.log.Warn("reporting the job's end before the server stored its whole log; the rest follows as soon as it can take it",
				"unsent", u.LogUnsent)
		}
	}
	if j.ctx.Err() != nil {
		return
	}
	if err := sp.update(func(m *spoolMeta) { m.Final = true }, true); err != nil {
		j.log.Warn("the log spool's state is not saved: a restart will not finish sending it", "err", err)
	}
	j.final.Store(true)
	if j.r.claimsNext() {
		u.Next = &api.ClaimRequest{Free: j.r.resources}
	}
	if err := j.setStatus(j.ctx, u); err == nil {
		j.reported.Store(true)
		j.log.Info("job finished", "status", out.status, "reason", out.reason, "log_unsent", u.LogUnsent)
	}
}

// finishWithoutLog reports a failure that came before there was a log.
func (j *job) finishWithoutLog(out outcome) {
	j.log.Error("job failed", "reason", out.reason)
	_ = j.setStatus(j.ctx, api.JobStatusUpdate{Status: out.status, Reason: out.reason})
}

// runProcess prepares the working directory and runs the commands, honouring
// stops. Its outcome's status is final unless the artifacts fail.
func (j *job) runProcess(sp *spool) outcome {
	// A stop during the preparation ends it.
	prepCtx, cancelPrep := context.WithCancel(j.ctx)
	var stopped atomic.Pointer[api.StopSignal]
	prepDone := make(chan struct{})
	go func() {
		defer close(prepDone)
		select {
		case sig := <-j.stopCh:
			stopped.Store(&sig)
			cancelPrep()
		case <-j.r.runCtx.Done():
			cancelPrep()
		case <-j.r.spot.interrupted:
			cancelPrep()
		case <-prepCtx.Done():
		}
	}()
	err := j.prepare(prepCtx)
	cancelPrep()
	<-prepDone
	if sig := stopped.Load(); sig != nil {
		// Nothing ran: there is nothing to upload.
		return stopOutcome(*sig, "stopped before the commands started")
	}
	if in := j.r.spot.current(); in != nil && j.ctx.Err() == nil {
		// The instance goes: the job is given back before it starts.
		j.log.Warn("the cloud reclaims the instance: giving the job back before its commands start")
		return outcome{status: api.StatusInterrupted, reason: in.reason()}
	}
	if j.r.runCtx.Err() != nil && j.ctx.Err() == nil {
		return outcome{status: api.StatusStopped, reason: "the runner shut down before the commands started"}
	}
	if err != nil {
		if j.ctx.Err() == nil {
			sp.Note("%v", err)
		}
		return outcome{status: api.StatusFailed, reason: err.Error()}
	}
	if err := j.setStatus(j.ctx, api.JobStatusUpdate{Status: api.StatusRunning}); err != nil {
		return outcome{status: api.StatusFailed, reason: "report running: " + err.Error()}
	}
	if j.spec.Image != "" && j.r.exec.Name() == "shell" {
		sp.Note("image %s ignored: this runner uses the shell executor", j.spec.Image)
	}
	proc, err := j.r.exec.Start(j.ctx, executor.Spec{
		JobID: j.id, RunName: j.run, Workflow: j.spec.Workflow, Provider: j.spec.Provider, Image: j.spec.Image,
		Commands: j.spec.Commands, Env: j.env(), WorkDir: j.dir.Path(), Output: sp,
		Resources: executorResources(j.spec.Resources),
	})
	if err != nil {
		sp.Note("%v", err)
		return outcome{status: api.StatusFailed, reason: err.Error()}
	}
	j.log.Info("job started")
	if j.ckpt != nil {
		ckptCtx, stopSyncs := context.WithCancel(j.ctx)
		ck := j.ckpt
		j.wg.Go(func() { ck.loop(ckptCtx) })
		defer stopSyncs()
	}
	return j.supervise(proc)
}

// executorResources are the limits of a job's container: what it asked
// for. A runner takes one job at a time, so the GPUs it asked for are free.
func executorResources(r api.Resources) executor.Resources {
	return executor.Resources{CPUs: r.CPU, MemoryMiB: r.MemoryMiB, ShmSizeMiB: r.ShmSizeMiB, GPUs: r.GPUCount()}
}

func stopOutcome(sig api.StopSignal, reason string) outcome {
	if sig.Abort {
		return outcome{status: api.StatusAborted, reason: reason}
	}
	return outcome{status: api.StatusStopped, reason: reason}
}

// prepare fills the working directory: the code, then the dependencies'
// artifacts.
func (j *job) prepare(ctx context.Context) error {
	d, err := j.r.work.Create(j.id)
	if err != nil {
		return err
	}
	j.dir = d
	if err := j.downloadCode(ctx); err != nil {
		return fmt.Errorf("download code: %w", err)
	}
	if len(j.spec.DependsOn) > 0 || len(j.spec.DependsOnTags) > 0 {
		if err := j.downloadDependencies(ctx); err != nil {
			return fmt.Errorf("download dependencies: %w", err)
		}
	}
	if j.ckpt != nil && j.attempt > 0 {
		cp, err := j.ckpt.restore(ctx)
		if err != nil {
			return fmt.Errorf("restore the checkpoint: %w", err)
		}
		if cp != nil {
			j.restored = cp
			j.spool.Note("restored checkpoint %d of attempt %d (%d files, %s, saved %s) into %s",
				cp.Seq, cp.Attempt+1, cp.Files, humanBytes(cp.Size), cp.CreatedAt.UTC().Format(time.RFC3339), strings.Join(j.spec.Checkpoints, ", "))
		} else {
			j.spool.Note("no checkpoint to restore: attempt %d starts from the beginning", j.attempt+1)
		}
	}
	return nil
}

// env is the job's environment: its workflow's, with DSTACK_ATTEMPT (from
// 1) and, when the attempt starts from a checkpoint, DSTACK_RESUMED=1.
func (j *job) env() map[string]string {
	if j.ckpt == nil && j.attempt == 0 {
		return j.spec.Env
	}
	env := make(map[string]string, len(j.spec.Env)+2)
	for k, v := range j.spec.Env {
		env[k] = v
	}
	env["DSTACK_ATTEMPT"] = strconv.Itoa(j.attempt + 1)
	if j.restored != nil {
		env["DSTACK_RESUMED"] = "1"
	}
	return env
}

// finalCheckpoint syncs the job's checkpoints once its commands ended,
// unless they succeeded (and the workflow does not keep checkpoints), were
// aborted, or never started. A job given back on a spot notice syncs within
// the time its artifacts have.
func (j *job) finalCheckpoint(sp *spool, out *outcome) {
	if j.ckpt == nil || !out.upload || (out.status == api.StatusDone && !j.spec.KeepCheckpoints) {
		return
	}
	ctx, cancel := j.uploadContext(sp, out)
	defer cancel()
	if ctx == nil {
		return
	}
	res, err := j.ckpt.sync(ctx, true)
	switch {
	case err != nil && (isLeaseLost(err) || j.ctx.Err() != nil):
	case err != nil:
		sp.Note("the last checkpoint sync failed (%v): the next attempt starts from the one before", err)
		j.log.Warn("final checkpoint sync", "err", err)
	case res.checkpoint != nil:
		sp.Note("checkpoint %d saved: %d files, %s", res.checkpoint.Seq, res.files, humanBytes(res.checkpoint.Size))
	}
}

// humanBytes writes a size for people.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// supervise waits for the process to end, or stops it when asked to.
func (j *job) supervise(proc executor.Process) outcome {
	waitCh := make(chan executor.Result, 1)
	go func() { waitCh <- proc.Wait() }()
	var res executor.Result
	var out outcome
	select {
	case res = <-waitCh:
		out = exitOutcome(res)
	case sig := <-j.stopCh:
		if sig.Abort {
			j.log.Info("aborting the job")
			_ = proc.Kill()
			res = <-waitCh
			return outcome{status: api.StatusAborted, exitCode: &res.ExitCode, reason: "aborted by the user"}
		}
		j.log.Info("stopping the job")
		res = j.terminate(proc, waitCh)
		out = outcome{status: api.StatusStopped, exitCode: &res.ExitCode, reason: "stopped by the user", upload: true}
	case <-j.r.runCtx.Done():
		j.log.Info("the runner is shutting down: stopping the job")
		res = j.terminate(proc, waitCh)
		out = outcome{status: api.StatusStopped, exitCode: &res.ExitCode, reason: "the runner shut down", upload: true}
	case <-j.r.spot.interrupted:
		j.log.Warn("the cloud reclaims the instance: stopping the job to give it back")
		if j.ckpt != nil {
			j.ckpt.syncNow() // while the job's commands end
		}
		res = j.terminate(proc, waitCh)
		out = outcome{status: api.StatusInterrupted, exitCode: &res.ExitCode, reason: j.r.spot.current().reason(), upload: true}
	case <-j.ctx.Done():
		_ = proc.Kill()
		<-waitCh
		return outcome{status: api.StatusFailed, reason: "dropped"}
	}
	if res.OutputErr != nil {
		j.log.Error("some of the job's output was lost", "err", res.OutputErr)
	}
	return out
}

func exitOutcome(res executor.Result) outcome {
	code := res.ExitCode
	if res.Success() {
		return outcome{status: api.StatusDone, exitCode: &code, upload: true}
	}
	o := outcome{status: api.StatusFailed, reason: res.Reason(), upload: true}
	if res.Err == nil {
		o.exitCode = &code
	}
	return o
}

// terminate sends SIGTERM, then SIGKILL after the grace period.
func (j *job) terminate(proc executor.Process, waitCh <-chan executor.Result) executor.Result {
	if err := proc.Terminate(); err != nil {
		j.log.Warn("terminate", "err", err)
	}
	t := time.NewTimer(j.r.cfg.StopGrace)
	defer t.Stop()
	select {
	case res := <-waitCh:
		return res
	case <-t.C:
		j.log.Info("the job outlived its grace period: killing it", "grace", j.r.cfg.StopGrace)
	case <-j.ctx.Done():
	}
	_ = proc.Kill()
	return <-waitCh
}

// watchStop long-polls the server for the user's stop and hands it to
// stopCh.
func (j *job) watchStop() {
	bo := client.NewBackoff(200*time.Millisecond, 3*time.Second)
	for j.ctx.Err() == nil {
		tok := j.r.token()
		sig, err := j.r.client().JobWaitStop(j.ctx, j.id, j.lease, 30*time.Second)
		switch {
		case j.ctx.Err() != nil:
			return
		case err == nil:
			bo.Reset()
			if sig.Stop {
				j.stopCh <- *sig
				return
			}
			continue
		case isLeaseLost(err):
			// Once the final status is on its way, the job ended; a lease
			// really lost shows in that report's own answer.
			if !j.final.Load() {
				j.loseLease()
			}
			return
		case isUnauthenticated(err):
			j.r.reauth(j.ctx, tok)
		default:
			j.log.Debug("waiting for a stop failed; retrying", "err", err)
		}
		_ = bo.Wait(j.ctx, err)
	}
}

// uploadContext is what the artifacts are uploaded within: the job's life,
// and for a job given back on a spot interruption notice, until the
// notice's time less SpotUploadMargin. A nil ctx means too late: the upload
// is skipped, and out says so.
func (j *job) uploadContext(sp *spool, out *outcome) (context.Context, context.CancelFunc) {
	if out.status != api.StatusInterrupted {
		return j.ctx, func() {}
	}
	deadline, ok := j.r.uploadDeadline()
	if !ok {
		if len(j.spec.Artifacts) > 0 {
			const msg = "artifacts not uploaded: too little time left before the instance goes"
			sp.Note("%s", msg)
			j.log.Warn(msg)
			out.reason += "; " + msg
		}
		return nil, func() {}
	}
	return context.WithDeadline(j.ctx, deadline)
}

// finishArtifacts reports uploading and uploads the artifacts within ctx,
// adjusting out when they fail.
func (j *job) finishArtifacts(ctx context.Context, sp *spool, out *outcome) {
	if len(j.spec.Artifacts) == 0 {
		return
	}
	u := api.JobStatusUpdate{Status: api.StatusUploading}
	if out.status == api.StatusInterrupted {
		u.Reason = out.reason // why it uploads, for `dstack ps`
	}
	if err := j.setStatus(ctx, u); err != nil {
		return
	}
	missing, err := j.uploadArtifacts(ctx, sp)
	if err != nil {
		if isLeaseLost(err) || j.ctx.Err() != nil {
			return
		}
		if ctx.Err() != nil {
			err = errors.New("artifacts not all uploaded: the instance's time ran out")
		}
		sp.Note("%v", err)
		j.log.Error("upload artifacts", "err", err)
		if out.status == api.StatusDone {
			out.status, out.reason = api.StatusFailed, err.Error()
		} else {
			out.reason += "; " + err.Error()
		}
		return
	}
	if len(missing) > 0 {
		msg := fmt.Sprintf("artifact path %s does not exist", strings.Join(quoteAll(missing), ", "))
		sp.Note("%s", msg)
		if out.status == api.StatusDone {
			out.status, out.reason = api.StatusFailed, msg
		}
	}
}

func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = fmt.Sprintf("%q", s)
	}
	return out
}
