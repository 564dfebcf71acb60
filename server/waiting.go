package server

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/autoscale/plan"
	"github.com/dstackai/dstack/backend"
	"github.com/dstackai/dstack/store"
)

// waitingEvery is how often, with no backend, the pending jobs are checked
// against the registered runners when nothing wakes the check sooner.
const waitingEvery = 2 * time.Second

// waitingGap is the least time between two passes of waitingLoop.
const waitingGap = 500 * time.Millisecond

// waitingLoop stands in for the autoscaler while the server has no backend
// (none at start, and AWS not configured or cleared): it gives each pending
// job that no free runner of its user fits a reason (plan.WaitingOnRunners:
// "waiting: 2 runners that fit are busy", or "no runner has 64 CPUs (the
// largest has 8)...") that `dstack ps` and `dstack run` show, and clears it
// once a free runner fits. It passes every waitingEvery and when woken through s.waiting
// (a run submitted, a runner registered, a job finished). While there are
// backends the autoscaler says why jobs wait, and this loop clears what it
// wrote and idles.
//
// Every replica runs it: they read the same state and write the same
// reasons, and the store skips a reason already there.
func (s *Server) waitingLoop(ctx context.Context) {
	w := &s.waitingReasons
	t := time.NewTicker(waitingEvery)
	defer t.Stop()
	for {
		start := time.Now()
		if err := s.explainWaiting(ctx, w); err != nil && ctx.Err() == nil {
			s.log.Error("say why pending jobs wait", "err", err)
		}
		// Wakes in a burst (every job that ends sends one) share a pass:
		// reasons need not be instant, and a deep queue is costly to read.
		gap := time.NewTimer(max(waitingGap, 4*time.Since(start)))
		select {
		case <-ctx.Done():
			gap.Stop()
			return
		case <-gap.C:
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.waiting:
		}
	}
}

// jobAttempt names one attempt of a job: a requeued job is pending again
// with the next attempt and the reason its requeue gave, which is not this
// loop's to clear.
type jobAttempt struct {
	id      string
	attempt int
}

// waitingReasons are the reasons waitingLoop last wrote, so that a pass
// writes only what changed and clears only what it wrote (a requeued job's
// "runner stopped responding" stays). After a restart it knows of none: a
// reason written before stays until a runner claims its job.
//
// mu is held through a pass and through a change between no backend and
// some (putBackend, removeBackend), so that the loop and the autoscaler
// hand over without either clearing a reason the other wrote.
type waitingReasons struct {
	mu      sync.Mutex
	written map[jobAttempt]string
}

// explainWaiting is one pass of waitingLoop.
func (s *Server) explainWaiting(ctx context.Context, w *waitingReasons) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if s.backends.Len() > 0 {
		return nil // the autoscaler says why jobs wait
	}
	if w.written == nil {
		w.written = map[jobAttempt]string{}
	}
	pending, err := s.store.JobListPending(ctx, store.JobListPendingParams{})
	if err != nil {
		return err
	}
	if len(pending) == 0 {
		clear(w.written)
		return nil
	}
	runners, err := s.store.RunnerList(ctx, store.RunnerListParams{})
	if err != nil {
		return err
	}
	want, changes := reasonChanges(pending, runnersByUser(runners), w.written)
	if len(changes) > 0 {
		if _, err := s.store.JobSetPendingReasons(ctx, store.JobSetPendingReasonsParams{Reasons: changes}); err != nil {
			return fmt.Errorf("store why jobs wait: %w", err) // written again next pass
		}
	}
	w.written = want
	return nil
}

// runnersByUser groups the runners that could take a job some day by
// user: every self-hosted runner, online or not (an offline one may come
// back), and the runner of an on-demand instance while it is online (left
// from when a backend was configured).
func runnersByUser(rs []*store.Runner) map[string][]plan.RegisteredRunner {
	out := map[string][]plan.RegisteredRunner{}
	for _, rn := range rs {
		if rn.InstanceID != "" && !rn.Online {
			continue
		}
		out[rn.UserID] = append(out[rn.UserID], plan.RegisteredRunner{
			UserID: rn.UserID, Resources: rn.Resources, Busy: rn.JobID != "",
			Offline: !rn.Online || rn.InterruptedAt != nil,
		})
	}
	return out
}

// reasonChanges decides, for the pending jobs, the reasons they should
// have (want: the jobs no free runner fits, because the runners that fit
// are busy or offline, or because none could ever take them) and the
// writes that get them there from written: new or changed reasons, and ""
// for the jobs this loop gave a reason that a free runner now fits. It is
// a pure function.
func reasonChanges(pending []*store.PendingJob, runners map[string][]plan.RegisteredRunner, written map[jobAttempt]string) (want map[jobAttempt]string, changes map[string]string) {
	want = map[jobAttempt]string{}
	changes = map[string]string{}
	// Jobs of one user often ask for the same: fit each shape once.
	type shape struct {
		user string
		res  api.Resources // GPU nil
		gpu  api.GPURequest
	}
	memo := map[shape]string{}
	for _, j := range pending {
		k := jobAttempt{j.ID, j.Attempt}
		sh := shape{user: j.UserID, res: j.Resources}
		if g := j.Resources.GPU; g != nil {
			sh.res.GPU, sh.gpu = nil, *g
		}
		msg, ok := memo[sh]
		if !ok {
			msg = plan.WaitingOnRunners(j.Resources, runners[j.UserID])
			memo[sh] = msg
		}
		prev, had := written[k]
		switch {
		case msg != "":
			want[k] = msg
			if prev != msg {
				changes[j.ID] = msg
			}
		case had:
			changes[j.ID] = ""
		}
	}
	return want, changes
}

// putBackend adds b to the server's backends, or replaces the one of its
// name. When it is the first, the autoscaler takes over saying why jobs
// wait: the reasons waitingLoop wrote are cleared before the autoscaler can
// see the backend, so none of them outlives the change and none of the
// autoscaler's is cleared.
func (s *Server) putBackend(ctx context.Context, b backend.Backend) {
	w := &s.waitingReasons
	w.mu.Lock()
	defer w.mu.Unlock()
	if s.backends.Len() == 0 && len(w.written) > 0 {
		if err := s.clearWaitingReasons(ctx, w); err != nil {
			s.log.Warn("clear why jobs wait", "err", err) // they go when their jobs are claimed
		}
	}
	s.backends.Put(backend.WithMetrics(b, s.backendMetrics))
	s.wakeAutoscaler()
}

// removeBackend removes the backend named name. When it was the last, the
// autoscaler steps back (clearing the reasons it wrote) before waitingLoop
// says why jobs wait.
func (s *Server) removeBackend(ctx context.Context, name string) {
	w := &s.waitingReasons
	w.mu.Lock()
	defer w.mu.Unlock()
	if s.backends.Remove(name) == nil {
		return
	}
	if c := s.autoscaler.Load(); c != nil {
		if s.backends.Len() == 0 {
			if err := c.Release(ctx); err != nil {
				s.log.Warn("autoscaler: step back", "err", err)
			}
		} else {
			c.WaitPass() // no pass still launches with the backend removed
		}
	}
	s.wakeAutoscaler()
}

// clearWaitingReasons clears the reasons w holds of the attempts still
// pending; w.mu is held.
func (s *Server) clearWaitingReasons(ctx context.Context, w *waitingReasons) error {
	pending, err := s.store.JobListPending(ctx, store.JobListPendingParams{})
	if err != nil {
		return err
	}
	changes := map[string]string{}
	for _, j := range pending {
		if _, ok := w.written[jobAttempt{j.ID, j.Attempt}]; ok {
			changes[j.ID] = ""
		}
	}
	if len(changes) > 0 {
		if _, err := s.store.JobSetPendingReasons(ctx, store.JobSetPendingReasonsParams{Reasons: changes}); err != nil {
			return err
		}
	}
	clear(w.written)
	return nil
}
