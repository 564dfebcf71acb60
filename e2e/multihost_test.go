package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/internal/testutil"
)

// The multi-host scenarios: a server and two runners, each in a container
// of its own on one Docker network, and a job that prints numbered lines
// for about 15 seconds. The runner that claims it (A) is cut off the
// network for less than the heartbeat timeout, for more, or killed; the
// other (B) is idle. The CLI runs in the server's container (docker exec).
//
// What the product promises, and the scenarios check:
//   - A partition shorter than the heartbeat timeout is invisible: the job
//     ends done on A, its first attempt, and its log holds every line once,
//     in order (the runner spools the output on its disk and ships it by
//     offset, idempotently).
//   - When A is gone (cut off past the timeout, or killed), the job is
//     requeued once, as attempt 1, and B runs it to done. Its log is what
//     attempt 0 shipped (whole lines "line 1".."line k", k < 150), then
//     attempt 1's whole output ("line 1".."line 150"); nothing of A's lands
//     after the requeue. A that comes back is fenced: every call under its
//     old lease is refused with lease_lost, and it drops the job.
//   - The job is held by one runner at a time: polled all along, its
//     runner changes once (A, none while queued, B), and its attempt goes
//     0 then 1, never 2.

// Timing of the scenarios: the server reaps a runner heartbeat-timeout
// after its last heartbeat; runners heartbeat every third of it.
const (
	mhHeartbeatTimeout = 3 * time.Second
	// The short partition has a longer timeout of its own: a request in
	// flight when the network goes is not failed but retransmitted by TCP,
	// with backoff, so the first heartbeat after the partition may land a
	// second or more after it. The partition starts just after a heartbeat;
	// it and that backoff end well before the timeout.
	mhShortHeartbeatTimeout = 6 * time.Second
	mhShortPartition        = 2500 * time.Millisecond
	mhJobTimeout            = 60 * time.Second // the job to end, requeue included
)

func TestMultiHost(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test: skipped with -short")
	}
	t.Parallel()
	docker := requireDocker(t)
	img := buildHostImage(t, docker)

	t.Run("partition_within_timeout", func(t *testing.T) {
		t.Parallel()
		c := newHostCluster(t, newDockerNet(t, docker, img), mhShortHeartbeatTimeout)
		name, a := c.submitCount()
		w := c.watch(name)

		// Cut A off right after a heartbeat: it misses one at most.
		c.afterHeartbeat(a)
		c.disconnect(c.runners[a])
		time.Sleep(mhShortPartition) // the partition itself
		c.connect(c.runners[a])

		job := c.waitJob(name, "to end", mhJobTimeout, func(j api.Job) bool { return j.Status.Finished() })
		seen := w.stop()
		if job.Status != api.StatusDone || job.RunnerName != a || job.Attempt != 0 {
			t.Errorf("job %s on %q attempt %d, want done on %s attempt 0; seen: %v", job.Status, job.RunnerName, job.Attempt, a, seen)
		}
		for _, s := range seen {
			if s.attempt != 0 || (s.runner != "" && s.runner != a) {
				t.Errorf("the job moved during a short partition: %v", seen)
				break
			}
		}
		if err := checkCount(c.logLines(name)); err != nil {
			t.Errorf("log: %v", err)
		}
		c.checkNotDropped(a)
	})

	t.Run("partition_past_timeout", func(t *testing.T) {
		t.Parallel()
		c := newHostCluster(t, newDockerNet(t, docker, img), mhHeartbeatTimeout)
		name, a := c.submitCount()
		b := c.other(a)
		w := c.watch(name)

		c.disconnect(c.runners[a])
		c.waitJob(name, "to be requeued", mhJobTimeout, func(j api.Job) bool { return j.Attempt >= 1 })
		// What attempt 0 shipped, as the server holds it once A is out.
		shipped, _ := splitAttempts(c.logLines(name))
		c.waitJob(name, "to run on "+b, mhJobTimeout, func(j api.Job) bool {
			return j.RunnerName == b && j.Status == api.StatusRunning
		})
		c.connect(c.runners[a])
		// A's next log upload or stop poll is refused: it drops the job.
		c.waitLog(c.runners[a], a+" to drop the job", mhJobTimeout, func(out string) bool {
			return strings.Contains(out, "the server gave the job away")
		})

		job := c.waitJob(name, "to end", mhJobTimeout, func(j api.Job) bool { return j.Status.Finished() })
		c.checkMovedOnce(w.stop(), job, a, b)
		c.checkRequeuedLog(name, shipped)
		c.checkNotDropped(b)
	})

	t.Run("runner_killed", func(t *testing.T) {
		t.Parallel()
		c := newHostCluster(t, newDockerNet(t, docker, img), mhHeartbeatTimeout)
		name, a := c.submitCount()
		b := c.other(a)
		w := c.watch(name)

		c.kill(c.runners[a])
		c.waitJob(name, "to be requeued", mhJobTimeout, func(j api.Job) bool { return j.Attempt >= 1 })
		shipped, _ := splitAttempts(c.logLines(name))
		job := c.waitJob(name, "to end", mhJobTimeout, func(j api.Job) bool { return j.Status.Finished() })
		c.checkMovedOnce(w.stop(), job, a, b)
		c.checkRequeuedLog(name, shipped)
		c.checkNotDropped(b)
	})
}

// hostCluster is a server and runners r1 and r2 in containers on a network.
type hostCluster struct {
	*dockerNet
	server  string            // its container
	token   string            // the admin token
	runners map[string]string // runner name -> container
}

// newHostCluster starts the server, reads its admin token from its output,
// and starts two runners with the shell executor, waiting for them to
// register.
func newHostCluster(t *testing.T, n *dockerNet, heartbeatTimeout time.Duration) *hostCluster {
	t.Helper()
	c := &hostCluster{dockerNet: n, runners: map[string]string{}}
	c.server = n.start("server", "dstack", "server", "--host", "0.0.0.0", "--port", "3000",
		"--data-dir", "/data", "--no-cli-config", "--local-backend", "off",
		"--heartbeat-timeout", heartbeatTimeout.String())
	out := n.waitLog(c.server, "the server to print its admin token", startTimeout, tokenRe.MatchString)
	c.token = tokenRe.FindStringSubmatch(out)[1]
	for _, r := range []string{"r1", "r2"} {
		c.runners[r] = n.start(r, "/bin/sh", "-c", fmt.Sprintf(
			"dstack-runner --data-dir /data config --server http://%s:3000 --token '%s' --name %s --executor shell && exec dstack-runner --data-dir /data start",
			c.server, c.token, r))
	}
	for r, ctr := range c.runners {
		n.waitLog(ctr, "runner "+r+" to register", startTimeout, func(out string) bool {
			return strings.Contains(out, "waiting for jobs")
		})
	}
	return c
}

// other is the runner that is not r.
func (c *hostCluster) other(r string) string {
	for name := range c.runners {
		if name != r {
			return name
		}
	}
	c.t.Fatalf("no runner but %s", r)
	return ""
}

// dstackErr runs the CLI in the server's container as the admin.
func (c *hostCluster) dstackErr(args ...string) (result, error) {
	env := []string{"DSTACK_SERVER=http://127.0.0.1:3000", "DSTACK_TOKEN=" + c.token}
	r, err := c.exec(c.server, env, append([]string{"dstack"}, args...)...)
	r.args = args
	return r, err
}

// dstack is dstackErr failing the test on a broken exec or a non-zero exit.
func (c *hostCluster) dstack(args ...string) result {
	c.t.Helper()
	r, err := c.dstackErr(args...)
	if err != nil {
		c.t.Fatal(err)
	}
	if r.code != 0 {
		c.t.Fatalf("%s", r)
	}
	return r
}

// jobErr is the job of the run called name, from `dstack ps -a --json`.
func (c *hostCluster) jobErr(name string) (api.Job, error) {
	r, err := c.dstackErr("ps", "-a", "--json")
	if err != nil {
		return api.Job{}, err
	}
	if r.code != 0 {
		return api.Job{}, errors.New(r.String())
	}
	var runs []api.Run
	if err := json.Unmarshal([]byte(r.stdout), &runs); err != nil {
		return api.Job{}, fmt.Errorf("ps -a --json: %w\n%s", err, r.stdout)
	}
	for _, run := range runs {
		if run.Name == name && len(run.Jobs) == 1 {
			return run.Jobs[0], nil
		}
	}
	return api.Job{}, fmt.Errorf("ps -a --json lists no run %s of one job:\n%s", name, r.stdout)
}

// waitJob polls the job until ok holds.
func (c *hostCluster) waitJob(name, what string, timeout time.Duration, ok func(api.Job) bool) api.Job {
	c.t.Helper()
	var job api.Job
	testutil.EventuallyWithin(c.t, timeout, "the job of "+name+" "+what, func() bool {
		var err error
		if job, err = c.jobErr(name); err != nil {
			c.t.Fatal(err)
		}
		return ok(job)
	})
	return job
}

// logLines is the job's log, by line.
func (c *hostCluster) logLines(name string) []string {
	c.t.Helper()
	out := c.dstack("logs", name).stdout
	if out == "" {
		return nil
	}
	return strings.Split(strings.TrimSuffix(out, "\n"), "\n")
}

// submitCount submits the count workflow, waits until it runs and its log
// has some lines, and returns the run's name and the runner it runs on.
func (c *hostCluster) submitCount() (name, runner string) {
	c.t.Helper()
	r := c.dstack("run", "-d", "count")
	name = runName(c.t, r.stdout+r.stderr)
	job := c.waitJob(name, "to run", waitTimeout, func(j api.Job) bool { return j.Status == api.StatusRunning })
	testutil.EventuallyWithin(c.t, waitTimeout, "the log of "+name+" to have 10 lines", func() bool {
		return len(c.logLines(name)) >= 10
	})
	if _, ok := c.runners[job.RunnerName]; !ok {
		c.t.Fatalf("the job runs on %q, none of the test's runners", job.RunnerName)
	}
	return name, job.RunnerName
}

// afterHeartbeat returns once runner r's last heartbeat, as the server
// has it, has moved.
func (c *hostCluster) afterHeartbeat(r string) {
	c.t.Helper()
	last := func() time.Time {
		var rs []api.Runner
		if err := json.Unmarshal([]byte(c.dstack("runners", "--json").stdout), &rs); err != nil {
			c.t.Fatal(err)
		}
		for _, rn := range rs {
			if rn.Name == r {
				return rn.LastHeartbeat
			}
		}
		c.t.Fatalf("dstack runners does not list %s", r)
		return time.Time{}
	}
	first := last()
	testutil.EventuallyWithin(c.t, mhShortHeartbeatTimeout, "a heartbeat of "+r, func() bool { return !last().Equal(first) })
}

// jobSeen is the job as one poll saw it.
type jobSeen struct {
	status  api.JobStatus
	runner  string
	attempt int
}

func (s jobSeen) String() string {
	return fmt.Sprintf("%s/%q/attempt %d", s.status, s.runner, s.attempt)
}

// jobWatch polls a job in the background and keeps every change.
type jobWatch struct {
	t    testing.TB
	quit chan struct{}
	done chan struct{}
	once sync.Once

	mu   sync.Mutex
	seen []jobSeen
	err  error
}

// watch polls the job of the run called name until stopped (at the end of
// the test at the latest).
func (c *hostCluster) watch(name string) *jobWatch {
	w := &jobWatch{t: c.t, quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			job, err := c.jobErr(name)
			w.mu.Lock()
			if err != nil {
				w.err = err
			} else if s := (jobSeen{job.Status, job.RunnerName, job.Attempt}); len(w.seen) == 0 || w.seen[len(w.seen)-1] != s {
				w.seen = append(w.seen, s)
			}
			w.mu.Unlock()
			select {
			case <-w.quit:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	c.t.Cleanup(func() { w.stop() })
	return w
}

// stop ends the polls and returns what they saw; a failed poll fails the
// test.
func (w *jobWatch) stop() []jobSeen {
	w.once.Do(func() {
		close(w.quit)
		<-w.done
		if w.err != nil {
			w.t.Errorf("polling the job: %v", w.err)
		}
	})
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.seen)
}

// checkMovedOnce checks that the job ended done on b as attempt 1, and
// that the polls saw it on a (attempt 0), then on no runner or on b
// (attempt 1), and nothing else.
func (c *hostCluster) checkMovedOnce(seen []jobSeen, job api.Job, a, b string) {
	c.t.Helper()
	if job.Status != api.StatusDone || job.RunnerName != b || job.Attempt != 1 {
		c.t.Errorf("job %s on %q attempt %d, want done on %s attempt 1; seen: %v", job.Status, job.RunnerName, job.Attempt, b, seen)
	}
	c.checkServerLog(a, b)
	attempt := 0
	for _, s := range seen {
		if s.attempt < attempt || s.attempt > 1 {
			c.t.Errorf("attempts seen out of order or past 1: %v", seen)
			return
		}
		attempt = s.attempt
		want := a
		if attempt == 1 {
			want = b
		}
		if s.runner != "" && s.runner != want {
			c.t.Errorf("attempt %d seen on %q, want %s: %v", attempt, s.runner, want, seen)
			return
		}
	}
}

// checkServerLog checks, in the server's log, that the job was assigned
// twice and interrupted once, and that every status report the server
// took came from a before the interruption and from b after it.
func (c *hostCluster) checkServerLog(a, b string) {
	c.t.Helper()
	_, stderr, err := c.logs(c.server)
	if err != nil {
		c.t.Fatal(err)
	}
	assigned, interrupted := 0, 0
	for _, l := range strings.Split(stderr, "\n") {
		switch {
		case strings.Contains(l, `msg="job assigned"`):
			assigned++
		case strings.Contains(l, `msg="job interrupted`):
			interrupted++
		case strings.Contains(l, `msg="job status"`):
			want := a
			if interrupted > 0 {
				want = b
			}
			if !strings.Contains(l, " runner="+want+" ") && !strings.HasSuffix(l, " runner="+want) {
				c.t.Errorf("a status report from another runner than %s (interrupted %d times so far): %s", want, interrupted, l)
			}
		}
	}
	if assigned != 2 || interrupted != 1 {
		c.t.Errorf("the server assigned the job %d times and interrupted it %d times, want 2 and 1:\n%s", assigned, interrupted, stderr)
	}
}

// checkNotDropped checks that runner r, which ran the job to its end,
// never took itself to have lost it: the end of the job is no lost lease.
func (c *hostCluster) checkNotDropped(r string) {
	c.t.Helper()
	stdout, stderr, err := c.logs(c.runners[r])
	if err != nil {
		c.t.Fatal(err)
	}
	if strings.Contains(stdout+stderr, "the server gave the job away") {
		c.t.Errorf("runner %s, which finished the job, says it lost it:\n%s", r, stderr)
	}
}

// checkRequeuedLog checks the final log of a requeued job: what attempt 0
// shipped before the requeue (shipped, its whole lines), unchanged, then
// attempt 1's whole output.
func (c *hostCluster) checkRequeuedLog(name string, shipped []string) {
	c.t.Helper()
	lines := c.logLines(name)
	first, second := splitAttempts(lines)
	if err := checkPrefix(first); err != nil || len(first) == 0 || len(first) >= countLines {
		c.t.Errorf("attempt 0's part of the log (%d lines): %v\n%s", len(first), err, strings.Join(lines, "\n"))
	}
	if !slices.Equal(first, shipped) {
		c.t.Errorf("attempt 0's part of the log changed after the requeue: %d lines then, %d now\n%s", len(shipped), len(first), strings.Join(lines, "\n"))
	}
	if err := checkCount(second); err != nil {
		c.t.Errorf("attempt 1's part of the log: %v\n%s", err, strings.Join(lines, "\n"))
	}
	if i := len(first); i >= len(lines) || !strings.HasPrefix(lines[i], "--- attempt 2 of ") {
		c.t.Errorf("the second attempt's output does not start with the server's line for it\n%s", strings.Join(lines, "\n"))
	}
}

// splitAttempts splits a log at its second "line 1": the first attempt's
// lines and the second's (none when there is no second "line 1"). The line
// the server writes at the start of the second attempt belongs to neither.
func splitAttempts(lines []string) (first, second []string) {
	first = lines
	for i := 1; i < len(lines); i++ {
		if lines[i] == "line 1" {
			first, second = lines[:i], lines[i:]
			break
		}
	}
	if n := len(first); n > 0 && strings.HasPrefix(first[n-1], "--- attempt 2 of ") {
		first = first[:n-1]
	}
	return first, second
}

// checkPrefix checks that lines are "line 1", "line 2", ... in order.
func checkPrefix(lines []string) error {
	for i, l := range lines {
		if want := "line " + strconv.Itoa(i+1); l != want {
			return fmt.Errorf("line %d is %q, want %q", i+1, l, want)
		}
	}
	return nil
}

// checkCount checks that lines are the count workflow's whole output.
func checkCount(lines []string) error {
	if err := checkPrefix(lines); err != nil {
		return err
	}
	if len(lines) != countLines {
		return fmt.Errorf("%d lines, want %d", len(lines), countLines)
	}
	return nil
}
