package e2e

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/client"
)

// simFleet is the simulated runners: each registers with the admin's
// token, heartbeats as the server asks, long-polls for a job, reports it
// running, appends a line to its log after a while, and reports it done.
type simFleet struct {
	t       *testing.T
	h       *haCluster
	admin   *client.Client
	size    haSize
	runners []*simRunner
	wg      sync.WaitGroup

	active    atomic.Int64 // jobs held now
	maxActive atomic.Int64 // the most held at once

	mu      sync.Mutex
	claims  map[string][]simClaim // job ID -> its assignments, in order
	done    map[string]string     // job ID -> the runner whose done report was accepted
	doubles []string              // a second done of one job
}

// simClaim is one assignment of a job and how it ended for its runner.
type simClaim struct {
	runner  string
	lease   int64
	attempt int
	outcome string // done, lost (the lease was lost), failed: why
}

type simRunner struct {
	name     string
	c        *client.Client
	interval time.Duration // how often the server wants a heartbeat

	mu    sync.Mutex
	calls []simCall
}

// simCall is one request of a runner.
type simCall struct {
	start, end time.Time
	failed     bool // the server could not be reached, or answered 5xx
}

func newSimFleet(t *testing.T, h *haCluster, admin *client.Client, size haSize) *simFleet {
	t.Helper()
	// One transport for every runner, as many connections as they need.
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns, tr.MaxIdleConnsPerHost = 4*size.runners, 4*size.runners
	t.Cleanup(tr.CloseIdleConnections)
	base, err := client.New(h.URL, h.Token, client.WithHTTPClient(&http.Client{Transport: tr}))
	if err != nil {
		t.Fatal(err)
	}
	f := &simFleet{t: t, h: h, admin: admin, size: size, claims: map[string][]simClaim{}, done: map[string]string{}}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	sem := make(chan struct{}, 32)
	for i := range size.runners {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			name := fmt.Sprintf("sim-%04d", i)
			reg, err := base.RunnerRegister(context.Background(), api.RunnerRegisterRequest{
				Name: name, Hostname: name, Executor: "shell", Version: stampedVersion,
				Resources: api.HostResources{CPUs: 1, MemoryMiB: 1024, DiskMiB: 10 << 10},
			})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("register %s: %w", name, err))
				return
			}
			f.runners = append(f.runners, &simRunner{name: name, c: base.WithToken(reg.Token), interval: time.Duration(reg.HeartbeatInterval)})
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return f
}

// start starts every runner's heartbeat and claim loops, until ctx ends.
func (f *simFleet) start(ctx context.Context) {
	for _, r := range f.runners {
		f.wg.Add(2)
		go func() {
			defer f.wg.Done()
			// Runners started at different times heartbeat out of step.
			every := cmp.Or(r.interval, 5*time.Second)
			t := time.NewTimer(mrand.N(every))
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					t.Reset(every)
				}
				_ = r.call(ctx, func(ctx context.Context) error { return r.c.RunnerHeartbeat(ctx, api.HeartbeatRequest{}) })
			}
		}()
		go func() {
			defer f.wg.Done()
			f.claimLoop(ctx, r)
		}()
	}
}

func (f *simFleet) wait() { f.wg.Wait() }

// call makes one request and notes how it went; a failure of the
// transport or a 5xx is a failed call.
func (r *simRunner) call(ctx context.Context, do func(context.Context) error) error {
	start := time.Now()
	err := do(ctx)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	r.mu.Lock()
	r.calls = append(r.calls, simCall{start: start, end: time.Now(), failed: err != nil && client.Retryable(err)})
	r.mu.Unlock()
	return err
}

// retry makes a call until it succeeds or fails for good, as the runner
// does; it reports whether some try failed on the way.
func (r *simRunner) retry(ctx context.Context, do func(context.Context) error) (retried bool, err error) {
	err = client.Do(ctx, client.Policy{Min: 100 * time.Millisecond, Max: 2 * time.Second, OnRetry: func(error) { retried = true }},
		func(ctx context.Context) error { return r.call(ctx, do) })
	return retried, err
}

func (f *simFleet) claimLoop(ctx context.Context, r *simRunner) {
	bo := client.NewBackoff(100*time.Millisecond, 3*time.Second)
	free := api.HostResources{CPUs: 1, MemoryMiB: 1024, DiskMiB: 10 << 10}
	for ctx.Err() == nil {
		var a *api.Assignment
		err := r.call(ctx, func(ctx context.Context) error {
			var err error
			a, err = r.c.RunnerClaim(ctx, api.ClaimRequest{Free: free, Wait: api.Duration(haClaimWait)})
			return err
		})
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			_ = bo.Wait(ctx, err)
			continue
		case a == nil:
			continue
		}
		bo.Reset()
		f.run(ctx, r, a)
	}
}

// run runs one assignment as a runner would, and records how it ended.
func (f *simFleet) run(ctx context.Context, r *simRunner, a *api.Assignment) {
	// The count of jobs held goes up once a claim is answered and down
	// before the job's end is reported: never above what the server
	// counts against the cap.
	if n := f.active.Add(1); n > f.maxActive.Load() {
		for m := f.maxActive.Load(); n > m && !f.maxActive.CompareAndSwap(m, n); m = f.maxActive.Load() {
		}
	}
	var released atomic.Bool
	release := func() {
		if released.CompareAndSwap(false, true) {
			f.active.Add(-1)
		}
	}
	defer release()
	outcome := f.work(ctx, r, a, release)
	if ctx.Err() != nil && outcome != "done" {
		outcome = "cut short by the test's end"
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.claims[a.Job.ID] = append(f.claims[a.Job.ID], simClaim{runner: r.name, lease: a.Lease, attempt: a.Job.Attempt, outcome: outcome})
	if outcome == "done" {
		if prev, ok := f.done[a.Job.ID]; ok {
			f.doubles = append(f.doubles, fmt.Sprintf("job %s done by %s and by %s", a.Job.ID, prev, r.name))
		}
		f.done[a.Job.ID] = r.name
	}
}

// work reports the job running, appends its log line and reports it done.
// It calls release before the done report.
func (f *simFleet) work(ctx context.Context, r *simRunner, a *api.Assignment, release func()) string {
	id, lease := a.Job.ID, a.Lease
	_, err := r.retry(ctx, func(ctx context.Context) error {
		_, err := r.c.JobSetStatus(ctx, id, lease, api.JobStatusUpdate{Status: api.StatusRunning})
		return err
	})
	if err != nil {
		return settle("report running", err)
	}
	select {
	case <-ctx.Done():
		return "cut short"
	case <-time.After(f.size.work): // the job's work
	}
	line := []byte(fmt.Sprintf("job %s attempt %d on %s\n", id, a.Job.Attempt, r.name))
	_, err = r.retry(ctx, func(ctx context.Context) error {
		_, err := r.c.JobLogAppend(ctx, id, lease, 0, line)
		return err
	})
	if err != nil {
		return settle("append to the log", err)
	}
	release()
	retried, err := r.retry(ctx, func(ctx context.Context) error {
		_, err := r.c.JobSetStatus(ctx, id, lease, api.JobStatusUpdate{Status: api.StatusDone, ExitCode: new(int)})
		return err
	})
	if err != nil && retried && client.IsCode(err, api.CodeLeaseLost) {
		// A report the server took, whose answer was lost with its
		// replica, is refused when repeated: the job is no longer active.
		// The server's view decides.
		if f.doneBy(ctx, a, r.name) {
			return "done"
		}
	}
	if err != nil {
		return settle("report done", err)
	}
	return "done"
}

// settle names how an assignment ended without a done report.
func settle(what string, err error) string {
	if client.IsCode(err, api.CodeLeaseLost) {
		return "lost (" + what + ")"
	}
	return fmt.Sprintf("failed to %s: %v", what, err)
}

// doneBy reports whether the server has the job done, by runner, in the
// assignment's attempt.
func (f *simFleet) doneBy(ctx context.Context, a *api.Assignment, runner string) bool {
	run, err := f.admin.RunGet(ctx, a.Job.RunName)
	if err != nil {
		return false
	}
	for _, j := range run.Jobs {
		if j.ID == a.Job.ID {
			return j.Status == api.StatusDone && j.RunnerName == runner && j.Attempt == a.Job.Attempt
		}
	}
	return false
}

func (f *simFleet) doneCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.done)
}

// checkJobs checks that every job of runs is done on the server, was
// assigned once and reported done once.
func (f *simFleet) checkJobs(t *testing.T, admin *client.Client, runs []string) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, d := range f.doubles {
		t.Errorf("a job ran twice: %s", d)
	}
	var total int
	var problems []string
	for _, name := range runs {
		run, err := admin.RunGet(context.Background(), name)
		if err != nil {
			t.Fatalf("run %s: %v", name, err)
		}
		for _, j := range run.Jobs {
			total++
			claims := f.claims[j.ID]
			switch {
			case j.Status != api.StatusDone:
				problems = append(problems, fmt.Sprintf("job %s (%s) is %s on %q, attempt %d; the runners saw %v", j.ID, name, j.Status, j.RunnerName, j.Attempt, claims))
			case len(claims) != 1:
				problems = append(problems, fmt.Sprintf("job %s (%s) was assigned %d times: %v", j.ID, name, len(claims), claims))
			case f.done[j.ID] != j.RunnerName:
				problems = append(problems, fmt.Sprintf("job %s (%s) is done on %q, but %q reported it done", j.ID, name, j.RunnerName, f.done[j.ID]))
			}
		}
	}
	if total != f.size.jobs {
		t.Errorf("the runs hold %d jobs, want %d", total, f.size.jobs)
	}
	if len(problems) > 0 {
		t.Errorf("%d of %d jobs were lost or ran more than once:\n%s", len(problems), total, strings.Join(problems[:min(len(problems), 20)], "\n"))
	}
}

// checkReconnects checks that each runner cut off by the kill was back
// within haReconnect of it: its first success after its last failure came
// by then. Every runner must have had a success after the kill.
func (f *simFleet) checkReconnects(t *testing.T, killed time.Time) {
	t.Helper()
	var late []string
	var worst time.Duration
	var cut int
	for _, r := range f.runners {
		r.mu.Lock()
		calls := slices.Clone(r.calls)
		r.mu.Unlock()
		slices.SortFunc(calls, func(a, b simCall) int { return a.end.Compare(b.end) })
		var lastFail time.Time // the last failure after the kill
		for _, c := range calls {
			if c.failed && c.end.After(killed) && c.end.After(lastFail) {
				lastFail = c.end
			}
		}
		from := lastFail
		if from.IsZero() {
			from = killed
		}
		var back time.Time // the first success after from
		for _, c := range calls {
			if !c.failed && c.end.After(from) && (c.start.After(killed) || !lastFail.IsZero()) {
				back = c.end
				break
			}
		}
		switch {
		case back.IsZero():
			late = append(late, fmt.Sprintf("%s: no success after the kill (its last failure %s after it)", r.name, lastFail.Sub(killed).Round(time.Millisecond)))
		case lastFail.IsZero():
			// Never cut off.
		case back.Sub(killed) > haReconnect:
			cut++
			late = append(late, fmt.Sprintf("%s: back %s after the kill", r.name, back.Sub(killed).Round(time.Millisecond)))
		default:
			cut++
			worst = max(worst, back.Sub(killed))
		}
	}
	t.Logf("%d runners were cut off by the kill; the last back in time returned %s after it; %d were late", cut, worst.Round(time.Millisecond), len(late))
	if len(late) > 0 {
		t.Errorf("%d of %d runners were not back within %s of the kill:\n%s", len(late), len(f.runners), haReconnect, strings.Join(late[:min(len(late), 20)], "\n"))
	}
}

// checkOnline checks that the server has every simulated runner online.
func (f *simFleet) checkOnline(t *testing.T, admin *client.Client) {
	t.Helper()
	rs, err := admin.RunnerList(context.Background())
	if err != nil {
		t.Fatalf("list runners: %v", err)
	}
	online := map[string]bool{}
	for _, r := range rs {
		online[r.Name] = r.Status == api.RunnerOnline || online[r.Name]
	}
	var off []string
	for _, r := range f.runners {
		if !online[r.name] {
			off = append(off, r.name)
		}
	}
	if len(off) > 0 {
		t.Errorf("%d runners are not online after the failover: %v", len(off), off[:min(len(off), 20)])
	}
}
