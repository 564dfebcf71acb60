// Command scale is a load generator for one dstack server: it starts a
// server of its own (the same code as `dstack server`, in a subprocess with
// a fresh data dir, on SQLite or on a fresh PostgreSQL database), then
// connects N simulated runners that register, heartbeat at the interval the
// server gives and long-poll for jobs as dstack-runner does, and measures
// what one replica needs to hold them:
//
//   - the server's resident memory (VmRSS) with N runners connected, and
//     the most it was resident (VmHWM) by the end of the drain;
//   - its CPU, in % of one core, while the runners only heartbeat and wait;
//   - heartbeat latency (p50, p99) while idle and while jobs drain;
//   - how fast a batch of jobs submitted through the API drains (a
//     simulated runner reports a claimed job done at once);
//   - errors: failed calls of the runners and the user, and ERROR lines in
//     the server's log (there must be none).
//
// Run it from bench/: `go run ./scale` (SQLite), or `go run ./scale -db
// postgres://user@host:5432/db?sslmode=disable` (a database is created next
// to the one named and dropped at the end). `-n 1000,5000,10000` picks the
// runner counts. The file descriptor limit is raised as far as the system
// allows; a run of 10,000 runners holds about 20,000 connections on each
// side.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/client"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

type options struct {
	counts   []int
	db       string
	jobs     int
	idle     time.Duration
	settle   time.Duration
	rate     int
	drainMax time.Duration
	keep     bool
	probes   int
	probeGap time.Duration
	pprof    string
	verbose  bool
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "serve" {
		os.Exit(serve(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == "probe" {
		os.Exit(runProbe(os.Args[2:]))
	}
	var o options
	var counts string
	flag.StringVar(&counts, "n", "1000,5000,10000", "runner counts, one server each, comma-separated")
	flag.StringVar(&o.db, "db", "", "PostgreSQL URL of an existing database; a fresh database is created beside it for each count (default: SQLite in a fresh data dir)")
	flag.IntVar(&o.jobs, "jobs", 10_000, "jobs to drain per count")
	flag.DurationVar(&o.idle, "idle", 12*time.Second, "idle window for CPU and heartbeat latency (at least one heartbeat interval: every runner beats in it)")
	flag.DurationVar(&o.settle, "settle", 5*time.Second, "wait after the last runner connected, before measuring")
	flag.IntVar(&o.rate, "start-rate", 1000, "runners started per second, as a fleet that comes up over time (0: all at once, as after a restart of the server)")
	flag.DurationVar(&o.drainMax, "drain-timeout", 3*time.Minute, "give up a drain after this long")
	flag.BoolVar(&o.keep, "keep", false, "keep the data dirs (server logs) after the run")
	flag.IntVar(&o.probes, "probes", 20, "of the N runners, those that time heartbeats from a process of their own (they only heartbeat)")
	flag.DurationVar(&o.probeGap, "probe-every", 250*time.Millisecond, "time between two heartbeats of a probe runner")
	flag.StringVar(&o.pprof, "pprof", "", "serve the server's net/http/pprof at this address (e.g. 127.0.0.1:6060), for profiling")
	flag.BoolVar(&o.verbose, "v", false, "say what each step does")
	flag.Parse()
	for _, s := range strings.Split(counts, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			fatalf("-n %q: give runner counts such as 1000,5000,10000", counts)
		}
		o.counts = append(o.counts, n)
	}
	if o.probes < 1 || o.probes >= slices.Min(o.counts) {
		fatalf("-probes %d: give at least 1, and fewer than the smallest runner count", o.probes)
	}
	raiseNoFile()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var rows []result
	for _, n := range o.counts {
		r, err := runOne(ctx, o, n)
		if err != nil {
			fatalf("%d runners: %v", n, err)
		}
		rows = append(rows, r)
		printTable(os.Stdout, o, rows[len(rows)-1:])
	}
	fmt.Println()
	printTable(os.Stdout, o, rows)
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "scale: "+format+"\n", args...)
	os.Exit(1)
}

// raiseNoFile lifts RLIMIT_NOFILE as far as allowed; the server, started
// from here, inherits it.
func raiseNoFile() {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return
	}
	want := uint64(1 << 20)
	if b, err := os.ReadFile("/proc/sys/fs/nr_open"); err == nil {
		if v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil {
			want = v
		}
	}
	if l.Max < want {
		// Raising the hard limit needs privileges; without, keep it.
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: want, Max: want}); err == nil {
			return
		}
	}
	l.Cur = l.Max
	_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
}

type result struct {
	n                  int
	db                 string
	rssMiB             float64
	peakMiB            float64
	idleCPU            float64
	idleP50, idleP99   time.Duration
	drainP50, drainP99 time.Duration
	// simIdleP99 and simDrainP99 are the heartbeats timed inside the load
	// generator, its own scheduling included.
	simIdleP99, simDrainP99 time.Duration
	simIdleN, simDrainN     int
	// drainCPU is where the machine's processors went while jobs drained:
	// the server's, the load generator's and every process's (percent of
	// one core each).
	drainCPU struct{ server, generator, machine float64 }
	// looks are the server's looks at the queue while jobs drained
	// (dstack_queue_looks_total), by result; ok when they were read.
	looks      struct{ claimed, none float64 }
	looksOK    bool
	drainRate  float64
	drained    int
	clientErrs int64
	serverErrs int
	firstErr   string
}

func printTable(w io.Writer, o options, rows []result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "runners\tdb\tRSS MiB\tpeak MiB\tidle CPU %\thb p50 idle\thb p99 idle\thb p50 drain\thb p99 drain\tdrain jobs/s\terrors\t")
	for _, r := range rows {
		rate := fmt.Sprintf("%.0f", r.drainRate)
		if r.drained < o.jobs {
			rate = fmt.Sprintf("%s (%d/%d)", rate, r.drained, o.jobs)
		}
		fmt.Fprintf(tw, "%d\t%s\t%.0f\t%.0f\t%.1f\t%s\t%s\t%s\t%s\t%s\t%d\t\n", r.n, r.db, r.rssMiB, r.peakMiB, r.idleCPU,
			ms(r.idleP50), ms(r.idleP99), ms(r.drainP50), ms(r.drainP99), rate, r.clientErrs+int64(r.serverErrs))
	}
	_ = tw.Flush()
	for _, r := range rows {
		fmt.Fprintf(w, "%d runners: heartbeat p99 timed inside the load generator (its own scheduling included): %s idle (%d beats), %s draining (%d beats)\n",
			r.n, ms(r.simIdleP99), r.simIdleN, ms(r.simDrainP99), r.simDrainN)
	}
	for _, r := range rows {
		c := r.drainCPU
		fmt.Fprintf(w, "%d runners: CPU while jobs drained, in %% of a core of %d: server %.0f, load generator %.0f, whole machine %.0f\n",
			r.n, runtime.NumCPU(), c.server, c.generator, c.machine)
	}
	for _, r := range rows {
		if r.looksOK && r.drained > 0 {
			fmt.Fprintf(w, "%d runners: looks at the queue while jobs drained: %.0f claimed a job, %.0f found none (%.2f a job)\n",
				r.n, r.looks.claimed, r.looks.none, r.looks.none/float64(r.drained))
		}
	}
	for _, r := range rows {
		if r.firstErr != "" {
			fmt.Fprintf(w, "%d runners: first error: %s\n", r.n, r.firstErr)
		}
	}
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }

// latencies collects heartbeat round trips per phase.
type latencies struct {
	mu    sync.Mutex
	phase string
	by    map[string][]time.Duration
}

func (l *latencies) setPhase(p string) {
	l.mu.Lock()
	l.phase = p
	l.mu.Unlock()
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	if l.phase != "" {
		l.by[l.phase] = append(l.by[l.phase], d)
	}
	l.mu.Unlock()
}

func (l *latencies) quantiles(p string) (p50, p99 time.Duration, n int) {
	l.mu.Lock()
	s := slices.Clone(l.by[p])
	l.mu.Unlock()
	return percentiles(s)
}

// percentiles sorts ds and returns its p50 and p99, and how many there are.
func percentiles(ds []time.Duration) (p50, p99 time.Duration, n int) {
	if len(ds) == 0 {
		return 0, 0, 0
	}
	slices.Sort(ds)
	return ds[len(ds)*50/100], ds[min(len(ds)-1, len(ds)*99/100)], len(ds)
}

// errs counts failed calls and keeps the first.
type errs struct {
	n     atomic.Int64
	mu    sync.Mutex
	first string
}

func (e *errs) add(what string, err error) {
	if e.n.Add(1) == 1 {
		e.mu.Lock()
		e.first = what + ": " + err.Error()
		e.mu.Unlock()
	}
}

func runOne(ctx context.Context, o options, n int) (result, error) {
	res := result{n: n, db: "sqlite"}
	dir, err := os.MkdirTemp("", "dstack-scale-")
	if err != nil {
		return res, err
	}
	if !o.keep {
		defer os.RemoveAll(dir)
	} else {
		fmt.Fprintf(os.Stderr, "data dir: %s\n", dir)
	}
	dsn := ""
	if o.db != "" {
		res.db = "postgres"
		var drop func()
		dsn, drop, err = freshDatabase(ctx, o.db, n)
		if err != nil {
			return res, err
		}
		defer drop()
	}
	srv, err := startServer(ctx, dir, dsn, o.pprof)
	if err != nil {
		return res, err
	}
	defer srv.stop()
	say := func(format string, args ...any) {
		if o.verbose {
			fmt.Fprintf(os.Stderr, "%s %d runners: %s\n", time.Now().Format("15:04:05"), n, fmt.Sprintf(format, args...))
		}
	}

	hc := &http.Client{Transport: transport(n)}
	admin, err := client.New(srv.url, srv.token, client.WithHTTPClient(hc))
	if err != nil {
		return res, err
	}
	var fails errs
	lat := &latencies{by: map[string][]time.Duration{}}
	runCtx, cancelRunners := context.WithCancel(ctx)
	defer cancelRunners()

	say("registering")
	rs := make([]*simRunner, n-o.probes)
	{
		var wg sync.WaitGroup
		var next atomic.Int64
		regErr := make(chan error, 1)
		for range 64 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := int(next.Add(1) - 1)
					if i >= len(rs) || runCtx.Err() != nil {
						return
					}
					res := api.HostResources{CPUs: 8, MemoryMiB: 32 << 10}
					reg, err := admin.RunnerRegister(runCtx, api.RunnerRegisterRequest{
						Name: fmt.Sprintf("sim-%05d", i), Hostname: "scale", Executor: "shell", Resources: res,
					})
					if err != nil {
						select {
						case regErr <- fmt.Errorf("register runner %d: %w", i, err):
						default:
						}
						return
					}
					rs[i] = &simRunner{c: admin.WithToken(reg.Token), res: res, interval: time.Duration(reg.HeartbeatInterval), claimBeats: reg.ClaimBeats}
				}
			}()
		}
		wg.Wait()
		select {
		case err := <-regErr:
			return res, err
		default:
		}
	}
	say("starting %d probe runners", o.probes)
	pr, err := startProbe(ctx, srv.url, srv.token, o.probes, o.probeGap)
	if err != nil {
		return res, err
	}
	defer pr.stop()
	say("starting %d runners", len(rs))
	var claiming atomic.Int64
	var done atomic.Int64
	var wg sync.WaitGroup
	for i, r := range rs {
		if o.rate > 0 && i > 0 && i%max(1, o.rate/20) == 0 {
			if err := sleep(ctx, 50*time.Millisecond); err != nil {
				return res, err
			}
		}
		wg.Add(2)
		go func() { defer wg.Done(); r.heartbeats(runCtx, lat, &fails) }()
		go func() { defer wg.Done(); r.claims(runCtx, &claiming, &done, &fails) }()
	}
	for claiming.Load() < int64(len(rs)) {
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return res, err
		}
	}
	say("all connected; settling")
	if err := sleep(ctx, o.settle); err != nil {
		return res, err
	}

	say("idle window of %s", o.idle)
	lat.setPhase("idle")
	cpu0, t0 := cpuTicks(srv.pid()), time.Now()
	if err := sleep(ctx, o.idle); err != nil {
		return res, err
	}
	cpu1, t1 := cpuTicks(srv.pid()), time.Now()
	lat.setPhase("")
	res.idleCPU = coreShare(cpu1-cpu0, t1.Sub(t0))
	res.rssMiB = float64(statusKiB(srv.pid(), "VmRSS")) / 1024
	var timed int
	if res.idleP50, res.idleP99, timed = pr.quantiles(t0, t1); timed == 0 {
		return res, errors.New("the probe runners timed no heartbeat in the idle window: see their errors above")
	}
	_, res.simIdleP99, res.simIdleN = lat.quantiles("idle")

	say("draining %d jobs", o.jobs)
	code, err := admin.CodeUpload(ctx, bytes.NewReader(tinyCode()))
	if err != nil {
		return res, fmt.Errorf("upload code: %w", err)
	}
	lat.setPhase("drain")
	looks0, looksErr := queueLooks(ctx, srv.url)
	srv0, gen0 := cpuTicks(srv.pid()), cpuTicks(os.Getpid())
	busy0, all0 := machineTicks()
	start := time.Now()
	for left := o.jobs; left > 0; {
		size := min(left, 1000)
		req := api.RunSubmitRequest{CodeID: code.CodeID, Workflow: "w0"}
		for i := range size {
			req.Jobs = append(req.Jobs, api.JobSpec{Workflow: fmt.Sprintf("w%d", i), Provider: "bash", Commands: []string{"true"},
				Resources: api.Resources{CPU: 1}})
		}
		if _, err := admin.RunSubmit(ctx, req); err != nil {
			fails.add("submit", err)
			break
		}
		left -= size
	}
	say("submitted in %s; %d done", time.Since(start), done.Load())
	deadline := time.Now().Add(o.drainMax)
	for done.Load() < int64(o.jobs) && time.Now().Before(deadline) {
		if err := sleep(ctx, 5*time.Millisecond); err != nil {
			return res, err
		}
	}
	elapsed := time.Since(start)
	srv1, gen1 := cpuTicks(srv.pid()), cpuTicks(os.Getpid())
	looks1, err := queueLooks(ctx, srv.url)
	if looksErr == nil && err == nil {
		res.looksOK = true
		res.looks.claimed, res.looks.none = looks1.claimed-looks0.claimed, looks1.none-looks0.none
	}
	busy1, all1 := machineTicks()
	res.drainCPU.server, res.drainCPU.generator = coreShare(srv1-srv0, elapsed), coreShare(gen1-gen0, elapsed)
	if all1 > all0 {
		res.drainCPU.machine = 100 * float64(runtime.NumCPU()) * (busy1 - busy0) / (all1 - all0)
	}
	lat.setPhase("")
	res.drained = int(done.Load())
	res.drainRate = float64(res.drained) / elapsed.Seconds()
	if res.drainP50, res.drainP99, timed = pr.quantiles(start, start.Add(elapsed)); timed == 0 {
		return res, errors.New("the probe runners timed no heartbeat while jobs drained: see their errors above")
	}
	_, res.simDrainP99, res.simDrainN = lat.quantiles("drain")
	res.peakMiB = float64(statusKiB(srv.pid(), "VmHWM")) / 1024

	say("stopping")
	cancelRunners()
	wg.Wait()
	pr.stop()
	// Let the server see the runners go, as it would see them restart.
	_ = sleep(ctx, time.Second)
	srv.stop()
	probeErrs, probeFirst := pr.failures()
	res.clientErrs = fails.n.Load() + int64(probeErrs)
	res.firstErr = fails.first
	if res.firstErr == "" && probeFirst != "" {
		res.firstErr = "probe runner: " + probeFirst
	}
	var firstSrv string
	res.serverErrs, firstSrv = srv.logErrors()
	if res.firstErr == "" && firstSrv != "" {
		res.firstErr = "server log: " + firstSrv
	}
	return res, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// transport is the simulated runners' shared HTTP transport: a connection
// per request in flight, as N separate runners would hold, kept alive
// between calls. Connections come from several loopback addresses, so that
// 20,000 of them do not run out of ephemeral ports.
func transport(n int) *http.Transport {
	var seq atomic.Uint32
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Transport{
		MaxIdleConns:        0,
		MaxIdleConnsPerHost: 2*n + 100,
		IdleConnTimeout:     2 * time.Minute,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dd := *d
			i := seq.Add(1)
			dd.LocalAddr = &net.TCPAddr{IP: net.IPv4(127, 0, byte(1+i/200%50), byte(1+i%200))}
			c, err := dd.DialContext(ctx, network, addr)
			if err != nil {
				return d.DialContext(ctx, network, addr)
			}
			return c, nil
		},
	}
}

// simRunner acts as dstack-runner does towards the server: heartbeats at
// the interval the server gave, and claims with a 30 s wait in a loop.
type simRunner struct {
	c        *client.Client
	res      api.HostResources
	interval time.Duration
	// claimBeats and claiming: as dstack-runner, a runner whose server
	// hears it while it waits in a claim does not heartbeat then.
	claimBeats bool
	claiming   atomic.Bool
}

var zero = 0

// claimWait is dstack-runner's default wait of one claim.
const claimWait = 30 * time.Second

func (r *simRunner) heartbeats(ctx context.Context, lat *latencies, fails *errs) {
	iv := r.interval
	if iv <= 0 {
		iv = 10 * time.Second
	}
	skip := func() bool { return r.claimBeats && r.claiming.Load() }
	beat(ctx, r.c, iv, skip, func(_ time.Time, d time.Duration, err error) {
		if err != nil {
			fails.add("heartbeat", err)
		} else {
			lat.add(d)
		}
	})
}

// beat heartbeats with c every `every` until ctx ends, the first beat at a
// random point of the first interval (runners start at different times),
// and tells done when each was sent, its round trip and how it failed. A
// beat is left out where skip (if not nil) says so.
func beat(ctx context.Context, c *client.Client, every time.Duration, skip func() bool, done func(sent time.Time, d time.Duration, err error)) {
	t := time.NewTimer(time.Duration(randInt63n(int64(every))))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if skip != nil && skip() {
			t.Reset(every)
			continue
		}
		start := time.Now()
		err := c.RunnerHeartbeat(ctx, api.HeartbeatRequest{})
		d := time.Since(start)
		if ctx.Err() != nil {
			return
		}
		done(start, d, err)
		t.Reset(every)
	}
}

func (r *simRunner) claims(ctx context.Context, claiming, done *atomic.Int64, fails *errs) {
	first := true
	for ctx.Err() == nil {
		if first {
			claiming.Add(1)
			first = false
		}
		r.claiming.Store(true)
		a, err := r.c.RunnerClaim(ctx, api.ClaimRequest{Free: r.res, Wait: api.Duration(claimWait)})
		r.claiming.Store(false)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			fails.add("claim", err)
			_ = sleep(ctx, time.Second)
			continue
		}
		for a != nil {
			a = r.complete(ctx, a, done, fails)
		}
	}
}

// complete reports a's end, asking for the runner's next job with it, as
// dstack-runner does, and returns that job. As dstack-runner, it retries a
// report that failed for a reason that passes; every failure counts.
func (r *simRunner) complete(ctx context.Context, a *api.Assignment, done *atomic.Int64, fails *errs) *api.Assignment {
	var next *api.Assignment
	p := client.Policy{Min: 100 * time.Millisecond, Max: 3 * time.Second, OnRetry: func(err error) { fails.add("complete", err) }}
	err := client.Do(ctx, p, func(ctx context.Context) error {
		res, err := r.c.JobSetStatus(ctx, a.Job.ID, a.Lease, api.JobStatusUpdate{Status: api.StatusDone, ExitCode: &zero, Next: &api.ClaimRequest{Free: r.res}})
		if err == nil {
			next = res.Next
		}
		return err
	})
	if ctx.Err() != nil {
		return nil
	}
	if err != nil {
		fails.add("complete", err)
		return nil
	}
	done.Add(1)
	return next
}

// server is the dstack server under test.
type server struct {
	cmd   *exec.Cmd
	url   string
	token string
	log   string
	once  sync.Once
}

func (s *server) pid() int { return s.cmd.Process.Pid }

func (s *server) stop() {
	s.once.Do(func() {
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = s.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = s.cmd.Process.Kill()
			<-done
		}
	})
}

// queueLooks reads the server's looks at the queue so far, by result,
// from its /metrics.
func queueLooks(ctx context.Context, url string) (looks struct{ claimed, none float64 }, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/metrics", nil)
	if err != nil {
		return looks, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return looks, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return looks, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return looks, fmt.Errorf("GET /metrics: %w", err)
	}
	for _, m := range fams["dstack_queue_looks_total"].GetMetric() {
		for _, l := range m.GetLabel() {
			switch {
			case l.GetName() != "result":
			case l.GetValue() == "claimed":
				looks.claimed = m.GetCounter().GetValue()
			case l.GetValue() == "none":
				looks.none = m.GetCounter().GetValue()
			}
		}
	}
	return looks, nil
}

// logErrors counts the ERROR records of the server's log.
func (s *server) logErrors() (int, string) {
	f, err := os.Open(s.log)
	if err != nil {
		return 1, err.Error()
	}
	defer f.Close()
	n, first := 0, ""
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), "level=ERROR") {
			if n == 0 {
				first = sc.Text()
			}
			n++
		}
	}
	return n, first
}

func startServer(ctx context.Context, dir, dsn, pprof string) (*server, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	args := []string{"serve", "--host", "127.0.0.1", "--port", strconv.Itoa(port), "--data-dir", dir,
		"--no-cli-config", "--local-backend", "off", "--log-level", "info"}
	if dsn != "" {
		args = append(args, "--db", dsn)
	}
	logPath := filepath.Join(dir, "server.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, args...)
	cmd.Env = append(os.Environ(), "HOME="+dir, "DSTACK_SCALE_PPROF="+pprof)
	cmd.Stderr = logf
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the server: %w", err)
	}
	logf.Close()
	s := &server{cmd: cmd, url: fmt.Sprintf("http://127.0.0.1:%d", port), log: logPath}
	tokc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if tok, ok := strings.CutPrefix(sc.Text(), "The admin token is "); ok {
				tokc <- strings.TrimSpace(tok)
			}
		}
	}()
	select {
	case s.token = <-tokc:
	case <-time.After(60 * time.Second):
		s.stop()
		return nil, fmt.Errorf("the server printed no admin token within a minute: see %s", logPath)
	case <-ctx.Done():
		s.stop()
		return nil, ctx.Err()
	}
	return s, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat's times on Linux.
const clockTicks = 100

// cpuTicks is the process's user+system time in clock ticks.
func cpuTicks(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	// Fields after the command name, which is in parentheses.
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return ut + st
}

// coreShare is ticks of processor time over d, in % of one core.
func coreShare(ticks int64, d time.Duration) float64 {
	return 100 * float64(ticks) / float64(clockTicks) / d.Seconds()
}

// machineTicks is the time all processors were busy, and in all, since
// boot, in clock ticks: /proc/stat's user, nice, system, idle, iowait, irq,
// softirq and steal, all but idle and iowait busy (the guest times that
// follow are counted in user and nice already).
func machineTicks() (busy, all float64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	for i := 1; i < len(f) && i <= 8; i++ {
		v, _ := strconv.ParseFloat(f[i], 64)
		all += v
		if i != 4 && i != 5 {
			busy += v
		}
	}
	return busy, all
}

// statusKiB is a size the kernel gives of the process, in KiB: field is
// VmRSS (resident now) or VmHWM (the most it was resident).
func statusKiB(pid int, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb
		}
	}
	return 0
}
