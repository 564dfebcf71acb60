// Package runner is dstack's runner agent: it registers a machine with the
// server, heartbeats, claims one job at a time and runs it through an
// executor, streaming its output and uploading its artifacts.
//
// A Runner talks to the server only through package client. Its life:
//
//	Start: remove the containers and job directories an earlier life
//	       left, detect resources, register (or reuse the identity in
//	       <data-dir>/state.json), then run two loops:
//	  heartbeat: every interval the server asked for; a refused credential
//	             is replaced by registering again with the user's token
//	             (an on-demand instance's runner joins once with its join
//	             token instead, and stops when refused: see join.go).
//	  claim:     long-poll for a job that fits the host; run it; repeat.
//	  spot:      with WatchSpotInterruption, read EC2's instance metadata
//	             for a spot interruption notice; on one, give the job back
//	             and go offline (see spot.go).
//	Stop:  stop claiming, stop the job in progress as a user's stop would
//	       (SIGTERM, grace, SIGKILL, artifacts, status "stopped"), all
//	       within ShutdownTimeout.
//
// A job goes: make <work-dir>/<id>/ afresh, download and unpack the code,
// download the dependencies' artifacts, report running, run the commands
// through the executor (Config.Executor: in a container of the job's
// image with docker, on the host with shell; output spooled to
// <data-dir>/spool/<id>.log and shipped to the server), report uploading,
// upload the artifacts, wait for the log to be acknowledged, report done,
// failed, stopped or aborted. Any call that answers lease_lost means the
// server gave the job away: the process is killed and nothing more is
// reported.
//
// The runner's own files (its config, its state with its credential, the
// log spools) are in the data directory, kept 0700 with the files in it
// 0600; the jobs' directories are in the work directory, apart from it, so
// that no job can name the runner's files. Every file operation in a job's
// directory goes through package jobdir: a symbolic link the job made that
// leads out is never followed. A log the server could not store in full (its
// disk is full) is reported with the job's end as incomplete and shipped on
// after the job, across restarts, until it is stored (logship.go, spools.go).
package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/client"
	"github.com/dstackai/dstack/executor"
	"github.com/dstackai/dstack/hostinfo"
	"github.com/dstackai/dstack/internal/privfs"
	"github.com/dstackai/dstack/internal/startstop"
	"github.com/dstackai/dstack/jobdir"
)

// Runner is the agent. Create it with New, then Start and Stop it.
type Runner struct {
	cfg  Config
	log  *slog.Logger
	exec executor.Executor
	// ownExec: the runner made exec, and closes it when it stops.
	ownExec bool
	user    *client.Client // authenticated with the user's token

	// life starts and stops the runner (package startstop): Stop, or the
	// end of the context given to Start, ends runCtx; Stop waits for every
	// goroutine started with life.Go, then stopped runs.
	life      startstop.Base
	closeExec sync.Once
	// serving: Start succeeded; set before Start returns.
	serving bool

	// runCtx is the runner's own context, from life: it ends when the
	// runner is told to stop: no more claims, and the job in progress is
	// stopped. hardCtx ends ShutdownTimeout later, or as soon as everything
	// is wound down: every call and process goes with it.
	runCtx     context.Context
	hardCtx    context.Context
	cancelHard context.CancelFunc
	// claimCtx ends with runCtx, or at a spot interruption notice: no
	// more claims. heartbeatCtx ends with hardCtx, or once an interrupted
	// runner drains; heartbeatDone is closed when the heartbeats ended.
	claimCtx        context.Context
	cancelClaim     context.CancelFunc
	heartbeatCtx    context.Context
	cancelHeartbeat context.CancelFunc
	heartbeatDone   chan struct{}
	loopDone        chan struct{}

	spot *spot // the spot interruption watch (spot.go)

	resources api.HostResources
	work      *jobdir.Root // the work directory, once started

	mu        sync.Mutex
	cred      *state // the current identity; never nil after Start
	runnerCli *client.Client
	current   *job
	// claiming: a claim of the claim loop is open (heartbeatLoop).
	claiming bool
	// forgot: the saved identity was removed (an interrupted runner's) and
	// is not to be saved again.
	forgot bool
	regMu  sync.Mutex // one registration at a time
}

// New checks cfg and returns a runner that has not started.
func New(cfg Config, logger *slog.Logger) (*Runner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.applyDefaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ex, ownExec := cfg.ExecutorImpl, false
	if ex == nil {
		var err error
		if ex, err = newExecutor(cfg, logger); err != nil {
			return nil, err
		}
		ownExec = true
	}
	user, err := client.New(cfg.Server, cfg.Token)
	if err != nil {
		if ownExec {
			closeExecutor(ex)
		}
		return nil, err
	}
	var watcher SpotWatcher
	if cfg.WatchSpotInterruption {
		if watcher = cfg.SpotWatcher; watcher == nil {
			watcher = NewIMDSWatcher(cfg.IMDSEndpoint)
		}
	}
	return &Runner{
		cfg:           cfg,
		log:           logger.With("subsystem", "runner"),
		exec:          ex,
		ownExec:       ownExec,
		user:          user,
		loopDone:      make(chan struct{}),
		heartbeatDone: make(chan struct{}),
		spot:          newSpot(watcher),
	}, nil
}

// newExecutor makes the executor cfg names. Its containers are labelled
// with the host and the data directory: a runner removes at start what an
// earlier life of itself left, and nothing of other runners'.
func newExecutor(cfg Config, logger *slog.Logger) (executor.Executor, error) {
	host, _ := os.Hostname()
	dir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ex, err := executor.New(ctx, cfg.Executor, executor.Options{
		BashImage: cfg.BashImage,
		Owner:     host + ":" + dir,
		Logger:    logger.With("subsystem", "runner"),
	})
	if err != nil {
		return nil, err
	}
	logger.Info("executor chosen", "subsystem", "runner", "executor", ex.Name(), "asked", cfg.Executor)
	return ex, nil
}

// closeExecutor releases what an executor holds (the Docker client's
// connections), when it holds anything.
func closeExecutor(ex executor.Executor) {
	if c, ok := ex.(io.Closer); ok {
		_ = c.Close()
	}
}

// Start prepares the data directory, detects the host's resources and
// registers, retrying while the server cannot be reached, then starts
// serving jobs in the background. It fails when the server refuses the
// registration, or when ctx ends first. Cancelling ctx later stops the
// runner as Stop does, without waiting. A second call returns the first's
// result; a call after Stop fails.
func (r *Runner) Start(ctx context.Context) error {
	return r.life.Start(ctx, r.start, r.stopped)
}

// start is Start's work; ctx is the runner's own context (runCtx).
func (r *Runner) start(ctx context.Context) error {
	r.runCtx = ctx
	r.hardCtx, r.cancelHard = context.WithCancel(context.WithoutCancel(ctx))
	fail := func(err error) error {
		close(r.loopDone)
		return err
	}
	if err := r.prepareDirs(); err != nil {
		return fail(err)
	}
	if err := os.MkdirAll(r.spoolDir(), 0o700); err != nil {
		return fail(fmt.Errorf("create data directory: %w", err))
	}
	// Leftovers of a runner that died: their jobs are the server's to
	// requeue. Their containers first: they write in the directories.
	if c, ok := r.exec.(executor.Cleaner); ok {
		if err := c.Cleanup(ctx); err != nil {
			r.log.Warn("remove the containers of an earlier run", "err", err)
		}
	}
	// Older runners kept jobs' directories and spools there.
	if err := os.RemoveAll(r.legacyJobsDir()); err != nil {
		return fail(fmt.Errorf("remove %s: %w", r.legacyJobsDir(), err))
	}
	if err := r.work.Clean(); err != nil {
		return fail(err)
	}
	if r.cfg.Resources != nil {
		r.resources = *r.cfg.Resources
	} else {
		res, err := hostinfo.Detect(ctx, hostinfo.Options{DataDir: r.cfg.WorkDir, NvidiaSMI: r.cfg.NvidiaSMI, Logger: r.log})
		if err != nil {
			return fail(fmt.Errorf("detect resources: %w", err))
		}
		r.resources = res
	}
	if err := r.identify(r.runCtx); err != nil {
		return fail(err)
	}
	r.resumeSpools()
	r.claimCtx, r.cancelClaim = context.WithCancel(r.runCtx)
	r.heartbeatCtx, r.cancelHeartbeat = context.WithCancel(r.hardCtx)
	if r.spot.watcher != nil {
		r.log.Info("watching for a spot interruption notice", "every", r.cfg.SpotPollInterval)
		r.life.Go(func() { r.watchSpot(r.runCtx) })
	}
	r.life.Go(func() {
		defer close(r.heartbeatDone)
		r.heartbeatLoop(r.heartbeatCtx)
	})
	r.life.Go(func() {
		defer close(r.loopDone)
		r.claimLoop()
	})
	r.life.Go(r.watchdog)
	r.serving = true
	return nil
}

// watchdog ends hardCtx once the claim loop is over, or ShutdownTimeout
// after the runner was told to stop, whichever comes first.
func (r *Runner) watchdog() {
	defer r.cancelHard()
	select {
	case <-r.loopDone:
		return
	case <-r.runCtx.Done():
	}
	t := time.NewTimer(r.cfg.ShutdownTimeout)
	defer t.Stop()
	select {
	case <-r.loopDone:
	case <-t.C:
		r.log.Warn("shutdown timeout passed: killing the job without reporting it", "timeout", r.cfg.ShutdownTimeout)
	}
}

// Stop stops claiming, stops the job in progress (artifacts uploaded,
// status "stopped"), and returns when every goroutine has ended, at most
// ShutdownTimeout later. It is safe to call twice, and before Start.
func (r *Runner) Stop() {
	r.life.Stop()
	r.closeExecutor()
}

// stopped ends what is left once the runner's goroutines have returned,
// whether Stop or the end of Start's context stopped it.
func (r *Runner) stopped() {
	r.cancelHard()
	if r.work != nil {
		r.work.Close()
	}
	r.goOffline()
	r.closeExecutor()
}

// closeExecutor closes the executor once, when the runner made it.
func (r *Runner) closeExecutor() {
	r.closeExec.Do(func() {
		if r.ownExec {
			closeExecutor(r.exec)
		}
	})
}

// goOffline tells the server, once the job is reported and the loops are
// over, that this runner is gone, so that it stops counting on it before the
// heartbeat timeout. The server may be away: that is what the timeout is for.
func (r *Runner) goOffline() {
	if !r.serving {
		return
	}
	r.sendOffline()
}

// sendOffline makes the call of goOffline.
func (r *Runner) sendOffline() {
	if r.token() == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := r.client().RunnerOffline(ctx); err != nil {
		r.log.Debug("could not tell the server the runner goes offline", "err", err)
		return
	}
	r.log.Info("told the server the runner is offline")
}

// Done is closed when the runner stopped serving jobs.
func (r *Runner) Done() <-chan struct{} { return r.loopDone }

// ID is the runner's ID on the server, once started.
func (r *Runner) ID() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cred == nil {
		return ""
	}
	return r.cred.RunnerID
}

// Executor is the name of the executor that runs the jobs ("shell",
// "docker"), as reported at registration.
func (r *Runner) Executor() string { return r.exec.Name() }

// Resources are the host's resources as reported, once started.
func (r *Runner) Resources() api.HostResources { return r.resources }

// legacyJobsDir held the jobs' directories and spools of older runners;
// start removes it.
func (r *Runner) legacyJobsDir() string { return filepath.Join(r.cfg.DataDir, "jobs") }

// prepareDirs makes the data directory private, with the state file in it,
// and opens the work directory, private too. A directory or file that was
// open to others (made by the user with the usual umask, or by an older
// runner) is tightened, and said so.
func (r *Runner) prepareDirs() error {
	for _, d := range []struct{ what, path string }{{"data directory", r.cfg.DataDir}, {"work directory", r.cfg.WorkDir}} {
		was, err := privfs.Dir(d.path)
		if err != nil {
			return fmt.Errorf("%s: %w", d.what, err)
		}
		if was != 0 {
			// Info: a directory made by hand or by an image is usually new;
			// a secret file readable by others is worth the warning below.
			r.log.Info("the "+d.what+" was open to other users: made it private (0700)", "dir", d.path, "was", was)
		}
	}
	was, err := privfs.File(statePath(r.cfg.DataDir))
	if err != nil {
		return fmt.Errorf("runner state: %w", err)
	}
	if was != 0 {
		r.log.Warn("the runner state was readable by other users: made it private (0600)", "file", statePath(r.cfg.DataDir), "was", was)
	}
	work, err := jobdir.OpenRoot(r.cfg.WorkDir)
	if err != nil {
		return err
	}
	r.work = work
	return nil
}

// client returns the client with the current runner credential.
func (r *Runner) client() *client.Client {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.runnerCli
}

func (r *Runner) token() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cred == nil {
		return ""
	}
	return r.cred.Token
}

// identify reuses the saved identity when it is still good, or registers.
func (r *Runner) identify(ctx context.Context) error {
	st, err := loadState(r.cfg.DataDir)
	if err != nil {
		r.log.Warn("ignoring the saved runner state", "err", err)
		st = nil
	}
	if st != nil && st.JobID != "" {
		r.log.Warn("the runner stopped in the middle of a job last time; registering anew so the server requeues it", "job", st.JobID)
	}
	if st.reusable(r.cfg, time.Now()) {
		r.setCred(st)
		p := client.Policy{Min: 200 * time.Millisecond, Max: 5 * time.Second, OnRetry: func(err error) {
			r.log.Warn("waiting for the server", "err", err)
		}}
		err := client.Do(ctx, p, func(ctx context.Context) error {
			return r.client().RunnerHeartbeat(ctx, api.HeartbeatRequest{Resources: &r.resources})
		})
		switch {
		case err == nil:
			r.log.Info("reusing the saved runner identity", "runner_id", st.RunnerID)
			return nil
		case ctx.Err() != nil:
			return ctx.Err()
		}
		r.log.Info("saved runner identity refused; registering anew", "err", err)
	}
	return r.register(ctx, "")
}

// register exchanges the user's token for a runner credential, retrying
// while the server cannot be reached. stale is the credential found
// refused: when another goroutine already replaced it, register returns at
// once.
//
// The host it reports is the machine's name, or, in a Kubernetes runner
// Pod, the node's (EnvNodeName, which the Pod's spec sets from
// spec.nodeName): the Pod's own name is the runner's name already.
func (r *Runner) register(ctx context.Context, stale string) error {
	r.regMu.Lock()
	defer r.regMu.Unlock()
	if stale != "" && r.token() != stale {
		return nil
	}
	req := api.RunnerRegisterRequest{Name: r.cfg.Name, Hostname: reportedHost(), Executor: r.exec.Name(), Version: r.cfg.Version, Resources: r.resources, Shared: r.cfg.Shared}
	bo := client.NewBackoff(200*time.Millisecond, 5*time.Second)
	for {
		resp, err := r.exchange(ctx, req, stale)
		if err == nil {
			st := &state{
				Server: r.cfg.Server, Name: r.cfg.Name, RunnerID: resp.RunnerID, Token: resp.Token,
				RegisteredAt: time.Now(), ExpiresAt: resp.ExpiresAt, HeartbeatInterval: time.Duration(resp.HeartbeatInterval),
				ClaimBeats: resp.ClaimBeats,
			}
			r.setCred(st)
			if err := r.save(st, true); err != nil {
				r.log.Warn("the runner identity is not saved; a restart will register anew", "err", err)
			}
			r.log.Info("registered", "runner_id", resp.RunnerID, "name", r.cfg.Name, "heartbeat_interval", st.HeartbeatInterval)
			return nil
		}
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, errJoinSpent):
			return err
		case isUnauthenticated(err) && r.joins():
			return fmt.Errorf("the server refused the join token: %w (the instance was terminated or its token already used; an on-demand runner cannot register again)", errors.Join(err, errJoinSpent))
		case isUnauthenticated(err):
			return fmt.Errorf("the server refused the token: %w (copy your token from the web UI's Settings and run `dstack-runner config --token TOKEN`)", err)
		case !client.Retryable(err):
			return fmt.Errorf("register: %w", err)
		}
		r.log.Warn("cannot register yet; retrying", "err", err)
		if bo.Wait(ctx, err) != nil {
			return ctx.Err()
		}
	}
}

func (r *Runner) setCred(st *state) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cred = st
	r.runnerCli = r.user.WithToken(st.Token)
}

// reauth replaces a refused runner credential, and reports whether it was
// replaced. The job in progress, if any, belonged to the old identity: the
// server will answer lease_lost for it.
func (r *Runner) reauth(ctx context.Context, stale string) bool {
	r.log.Warn("the runner credential was refused; registering again")
	if err := r.register(ctx, stale); err != nil {
		switch {
		case ctx.Err() != nil:
		case errors.Is(err, errJoinSpent):
			r.giveUp(err)
		default:
			r.log.Error("register again", "err", err)
		}
		return false
	}
	return true
}

// saveJob records the job in progress in the state file.
func (r *Runner) saveJob(jobID string) {
	r.mu.Lock()
	st := *r.cred
	st.JobID = jobID
	r.mu.Unlock()
	if err := r.save(&st, false); err != nil {
		r.log.Warn("save runner state", "err", err)
	}
}

// save writes the state file, unless the identity was forgotten.
func (r *Runner) save(st *state, durable bool) error {
	r.mu.Lock()
	forgot := r.forgot
	r.mu.Unlock()
	if forgot {
		return nil
	}
	return saveState(r.cfg.DataDir, st, durable)
}

func (r *Runner) heartbeatInterval() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	if d := r.cred.HeartbeatInterval; d > 0 {
		return d
	}
	return 10 * time.Second
}

func (r *Runner) setClaiming(on bool) {
	r.mu.Lock()
	r.claiming = on
	r.mu.Unlock()
}

func (r *Runner) heartbeatLoop(ctx context.Context) {
	t := time.NewTimer(r.heartbeatInterval())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var jobID string
		r.mu.Lock()
		if r.current != nil {
			jobID = r.current.id
		}
		// A claim open stands for the beat where the server says so.
		skip := jobID == "" && r.claiming && r.cred.ClaimBeats
		r.mu.Unlock()
		if skip {
			t.Reset(r.heartbeatInterval())
			continue
		}
		tok := r.token()
		err := r.client().RunnerHeartbeat(ctx, api.HeartbeatRequest{JobID: jobID})
		switch {
		case err == nil || ctx.Err() != nil:
		case isUnauthenticated(err):
			r.reauth(ctx, tok)
		default:
			r.log.Warn("heartbeat failed", "err", err)
		}
		t.Reset(r.heartbeatInterval())
	}
}

// claimLoop claims and runs jobs one at a time until runCtx ends, or until a
// spot interruption notice: then, its job given back, it drains.
func (r *Runner) claimLoop() {
	ctx := r.claimCtx
	defer func() {
		if r.runCtx.Err() == nil && r.spot.current() != nil {
			r.drain()
		}
	}()
	// A runner on a spot instance reclaimed already takes no job.
	select {
	case <-r.spot.checked:
	case <-ctx.Done():
	}
	bo := client.NewBackoff(100*time.Millisecond, 3*time.Second)
	for ctx.Err() == nil {
		r.renewIfDue(ctx)
		tok := r.token()
		r.setClaiming(true)
		a, err := r.client().RunnerClaim(ctx, api.ClaimRequest{Free: r.resources, Wait: api.Duration(r.cfg.ClaimWait)})
		r.setClaiming(false)
		switch {
		case ctx.Err() != nil:
			return
		case err == nil:
			bo.Reset()
		case isUnauthenticated(err):
			if !r.reauth(ctx, tok) {
				_ = bo.Wait(ctx, err)
			}
			continue
		default:
			r.log.Warn("claim failed; retrying", "err", err)
			_ = bo.Wait(ctx, err)
			continue
		}
		for a != nil && ctx.Err() == nil {
			a = r.runJob(a)
		}
	}
}

// claimsNext reports whether the runner would claim again after the job it
// runs: it asks for its next job with the job's final status then
// (api.JobStatusUpdate.Next). Not when it stops or drains, and not when
// its credential is due for renewal, which happens between claims.
func (r *Runner) claimsNext() bool {
	if r.claimCtx.Err() != nil || r.spot.current() != nil {
		return false
	}
	if r.joins() {
		return true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return !time.Now().After(r.cred.renewAt())
}

// renewIfDue replaces the credential ahead of its expiry, between jobs.
func (r *Runner) renewIfDue(ctx context.Context) {
	if r.joins() {
		return // its join token is spent; see join.go
	}
	r.mu.Lock()
	due := time.Now().After(r.cred.renewAt())
	tok := r.cred.Token
	r.mu.Unlock()
	if due {
		r.log.Info("renewing the runner credential before it expires")
		if err := r.register(ctx, tok); err != nil && ctx.Err() == nil {
			r.log.Error("renew the runner credential", "err", err)
		}
	}
}

// EnvNodeName is the Kubernetes node a runner Pod runs on, set by the
// Kubernetes backend's Pod spec; the runner reports it as its host.
const EnvNodeName = "DSTACK_NODE_NAME"

// reportedHost is the host name a runner registers with.
func reportedHost() string {
	if n := strings.TrimSpace(os.Getenv(EnvNodeName)); n != "" {
		return n
	}
	host, _ := os.Hostname()
	return host
}
