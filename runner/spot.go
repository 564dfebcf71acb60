package runner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/client"
)

// Spot interruptions. About two minutes before EC2 reclaims a spot instance,
// its instance metadata service (IMDSv2) answers
// meta-data/spot/instance-action with the notice
// {"action": "terminate"|"stop"|"hibernate", "time": "2026-…Z"} instead of
// 404. With Config.WatchSpotInterruption (`dstack-runner start
// --watch-spot-interruption`) the runner reads it every SpotPollInterval,
// and once at start before its first claim. On a notice it:
//
//  1. tells the server (POST /runner/interruption), which gives it no more
//     jobs and shows the reason on its job at once;
//  2. stops claiming, and stops the job in progress as a user's stop would
//     (SIGTERM, StopGrace, SIGKILL);
//  3. uploads the job's artifacts while the notice's time less
//     SpotUploadMargin allows (that is the upload's deadline), and skips
//     them when it has already passed;
//  4. gives the job back (status interrupted): the server requeues it at
//     once, attempt+1, within its maximum of attempts;
//  5. stops heartbeating, goes offline, forgets its saved identity (a later
//     start registers anew; an on-demand instance's runner keeps it, its
//     join token being spent), and idles until the instance goes away or the
//     runner is stopped.
//
// It idles rather than exits because its service restarts it when it exits
// (systemd's Restart=always), and a new life would register again on a
// machine about to go. Should the notice disappear (a stopped or hibernated
// instance started again: the cloud clears it), the runner ends (Done is
// closed), so that its service starts it afresh and it registers anew.
//
// Errors reading the metadata are logged, at most once a minute, and never
// stop the runner.

// DefaultIMDSEndpoint is EC2's instance metadata service.
const DefaultIMDSEndpoint = "http://169.254.169.254"

// spotCheckTimeout bounds one read of the notice; the first claim waits for
// the first read at most this long.
const spotCheckTimeout = 5 * time.Second

// SpotNotice is a spot instance's interruption notice.
type SpotNotice struct {
	// Action is what the cloud will do: terminate, stop or hibernate.
	Action string `json:"action"`
	// Time is when it will.
	Time time.Time `json:"time"`
}

// SpotWatcher reads the interruption notice of the machine the runner runs
// on.
type SpotWatcher interface {
	// SpotNotice returns the notice, or nil when there is none.
	SpotNotice(ctx context.Context) (*SpotNotice, error)
}

// NewIMDSWatcher returns a SpotWatcher that reads EC2's instance metadata
// service (IMDSv2: imdsClient fetches and renews the session token) at
// endpoint, DefaultIMDSEndpoint when empty.
func NewIMDSWatcher(endpoint string) SpotWatcher {
	if endpoint == "" {
		endpoint = DefaultIMDSEndpoint
	}
	return &imdsWatcher{c: newIMDSClient(endpoint), endpoint: endpoint}
}

type imdsWatcher struct {
	c        *imdsClient
	endpoint string
}

// spotWarning is how long before the instance goes EC2 gives its notice; it
// stands in for a notice's missing time.
const spotWarning = 2 * time.Minute

func (w *imdsWatcher) SpotNotice(ctx context.Context) (*SpotNotice, error) {
	b, err := w.c.getMetadata(ctx, "spot/instance-action")
	if err != nil {
		var status interface{ HTTPStatusCode() int }
		if errors.As(err, &status) && status.HTTPStatusCode() == http.StatusNotFound {
			return nil, nil
		}
		return nil, fmt.Errorf("read spot/instance-action from %s: %w", w.endpoint, err)
	}
	return parseSpotNotice(b[:min(len(b), 64<<10)], time.Now())
}

// parseSpotNotice reads a notice. One without a time is taken as due
// spotWarning after now: better early than never.
func parseSpotNotice(b []byte, now time.Time) (*SpotNotice, error) {
	var n SpotNotice
	if err := json.Unmarshal(b, &n); err != nil || n.Action == "" {
		return nil, fmt.Errorf("spot/instance-action %.200q is not a notice {\"action\": ..., \"time\": ...}", b)
	}
	if n.Time.IsZero() {
		n.Time = now.Add(spotWarning)
	}
	return &n, nil
}

// interruption is a notice as the runner took it.
type interruption struct {
	SpotNotice
	noticedAt time.Time
}

// request is the notice as the server takes it.
func (in *interruption) request() api.RunnerInterruptionRequest {
	return api.RunnerInterruptionRequest{Action: in.Action, Time: in.Time}
}

// reason says what is happening, for people.
func (in *interruption) reason() string { return in.request().Describe(in.noticedAt) }

// spot is a runner's spot watch: what it saw, and the channels its loops
// select on. Its channels are made even when the runner does not watch, so
// that the loops need not know.
type spot struct {
	watcher SpotWatcher // nil: not watching

	checked     chan struct{} // closed after the first read, or at once when not watching
	checkedOnce sync.Once

	interrupted chan struct{} // closed at the first notice
	once        sync.Once
	mu          sync.Mutex
	notice      *interruption

	resumed     chan struct{} // closed when the notice disappeared after one was seen
	resumedOnce sync.Once

	reported chan struct{} // closed once the server was told, or given up on
}

func newSpot(w SpotWatcher) *spot {
	s := &spot{watcher: w, checked: make(chan struct{}), interrupted: make(chan struct{}), resumed: make(chan struct{}),
		reported: make(chan struct{})}
	if w == nil {
		s.markChecked()
	}
	return s
}

func (s *spot) markChecked() { s.checkedOnce.Do(func() { close(s.checked) }) }

// current is the notice the runner acts on, nil when none came.
func (s *spot) current() *interruption {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.notice
}

// take records the first notice and reports whether n was it.
func (s *spot) take(n SpotNotice, now time.Time) bool {
	first := false
	s.once.Do(func() {
		s.mu.Lock()
		s.notice = &interruption{SpotNotice: n, noticedAt: now}
		s.mu.Unlock()
		close(s.interrupted)
		first = true
	})
	return first
}

// watchSpot reads the notice until ctx ends, acting on the first.
func (r *Runner) watchSpot(ctx context.Context) {
	defer r.spot.markChecked()
	var lastWarn time.Time
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, spotCheckTimeout)
		n, err := r.spot.watcher.SpotNotice(rctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		switch {
		case err != nil:
			if now := time.Now(); now.Sub(lastWarn) >= time.Minute {
				lastWarn = now
				r.log.Warn("cannot read the spot interruption notice from the instance metadata; still trying (warned at most once a minute)", "err", err)
			}
		case n != nil:
			if r.spot.take(*n, time.Now()) {
				// Claims stop before the first read counts as done: a
				// runner started on an instance being reclaimed claims
				// nothing, not even once.
				r.cancelClaim()
				r.spot.markChecked()
				r.interrupt(ctx)
			}
		case r.spot.current() != nil:
			r.log.Warn("the spot interruption notice is gone: the instance was started again; the runner ends, to be started afresh")
			r.spot.resumedOnce.Do(func() { close(r.spot.resumed) })
			return
		}
		r.spot.markChecked()
		t.Reset(r.cfg.SpotPollInterval)
	}
}

// interrupt acts on the notice: claims stop (the claim loop then drains),
// the job in progress stops (job.go), and the server is told.
func (r *Runner) interrupt(ctx context.Context) {
	in := r.spot.current()
	r.log.Warn("spot interruption notice: the cloud reclaims this instance; giving the job back and taking no more",
		"action", in.Action, "at", in.Time, "in", time.Until(in.Time).Round(time.Second))
	r.cancelClaim()
	r.reportInterruption(ctx, in)
	close(r.spot.reported)
}

// reportInterruption tells the server, retrying while it cannot be reached,
// until the notice's time has passed (and at least half a minute).
func (r *Runner) reportInterruption(ctx context.Context, in *interruption) {
	ctx, cancel := context.WithDeadline(ctx, latest(in.Time, time.Now().Add(30*time.Second)))
	defer cancel()
	bo := client.NewBackoff(200*time.Millisecond, 3*time.Second)
	for {
		tok := r.token()
		resp, err := r.client().RunnerInterruption(ctx, in.request())
		switch {
		case err == nil:
			r.log.Info("told the server of the interruption: it gives this runner no more jobs", "reason", resp.Reason)
			return
		case ctx.Err() != nil:
			r.log.Warn("could not tell the server of the interruption; the job is given back all the same", "err", err)
			return
		case isUnauthenticated(err):
			if r.reauth(ctx, tok) {
				continue
			}
		case !client.Retryable(err):
			r.log.Error("the server refused the interruption report; the job is given back all the same", "err", err)
			return
		default:
			r.log.Warn("telling the server of the interruption failed; retrying", "err", err)
		}
		if bo.Wait(ctx, err) != nil {
			return
		}
	}
}

func latest(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// uploadDeadline is until when the artifacts of a job stopped by the notice
// may be uploaded; ok is false when that time has passed.
func (r *Runner) uploadDeadline() (deadline time.Time, ok bool) {
	in := r.spot.current()
	if in == nil {
		return time.Time{}, false
	}
	deadline = in.Time.Add(-r.cfg.SpotUploadMargin)
	return deadline, time.Now().Before(deadline)
}

// drain ends the runner's work on an instance being reclaimed, once its job
// is given back and the server told of the interruption: no more heartbeats
// (they would bring it back online), offline, identity forgotten; then it
// idles until stopped, or until the notice is gone.
func (r *Runner) drain() {
	select {
	case <-r.spot.reported:
	case <-r.runCtx.Done():
		return
	}
	r.cancelHeartbeat()
	<-r.heartbeatDone
	r.sendOffline()
	if !r.joins() {
		r.forgetIdentity()
	}
	r.log.Warn("the runner is offline and takes no job: waiting for the instance to go away")
	select {
	case <-r.runCtx.Done():
	case <-r.spot.resumed:
	}
}

// forgetIdentity removes the saved identity, so that a later start
// registers anew rather than come back as a runner the server keeps as
// interrupted.
func (r *Runner) forgetIdentity() {
	r.mu.Lock()
	r.forgot = true
	r.mu.Unlock()
	if err := os.Remove(statePath(r.cfg.DataDir)); err != nil && !errors.Is(err, os.ErrNotExist) {
		r.log.Warn("remove the saved runner identity", "err", err)
	}
}
