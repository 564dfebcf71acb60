package server

import (
	"context"
	"fmt"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/autoscale/plan"
	"github.com/dstackai/dstack/store"
)

// waitingEvery is how often, with no backend, the pending jobs are checked
// against the registered runners when nothing wakes the check sooner.
const waitingEvery = 2 * time.Second

// waitingGap is the least time between two passes of waitingLoop.
const waitingGap = 500 * time.Millisecond

// waitingLoop runs when no backend is configured, in the autoscaler's
// stead: it gives each pending job that no registered runner of its user
// could ever take a reason (plan.NoRunnerFits: "no runner has 64 CPUs (the
// largest has 8)...") that `dstack ps` and `dstack run` show, and clears it
// once a runner that fits registers. It passes every waitingEvery and when
// woken through s.autoscale (a run submitted, a runner registered, a job
// finished).
//
// Every replica runs it: they read the same state and write the same
// reasons, and the store skips a reason already there.
func (s *Server) waitingLoop(ctx context.Context) {
	w := &waitingReasons{written: map[jobAttempt]string{}}
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
		case <-s.autoscale:
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
type waitingReasons struct {
	written map[jobAttempt]string
}

// explainWaiting is one pass of waitingLoop.
func (s *Server) explainWaiting(ctx context.Context, w *waitingReasons) error {
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

// runnersByUser groups the resources of the runners that could take a job
// some day by user: every self-hosted runner, online or not (an offline one
// may come back), and the runner of an on-demand instance while it is
// online (left from when a backend was configured).
func runnersByUser(rs []*store.Runner) map[string][]api.HostResources {
	out := map[string][]api.HostResources{}
	for _, rn := range rs {
		if rn.InstanceID != "" && !rn.Online {
			continue
		}
		out[rn.UserID] = append(out[rn.UserID], rn.Resources)
	}
	return out
}

// reasonChanges decides, for the pending jobs, the reasons they should
// have (want: the jobs no runner fits) and the writes that get them there
// from written: new or changed reasons, and "" for the jobs this loop gave a
// reason that a runner now fits. It is a pure function.
func reasonChanges(pending []*store.PendingJob, runners map[string][]api.HostResources, written map[jobAttempt]string) (want map[jobAttempt]string, changes map[string]string) {
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
			msg = plan.NoRunnerFits(j.Resources, runners[j.UserID])
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
