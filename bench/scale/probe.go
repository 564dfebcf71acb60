package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/client"
)

// The heartbeat latency of the table is timed by probe runners in a process
// of their own, as a runner on a machine of its own would see it. Timed
// inside the load generator, a round trip would also count the time the
// reply waits for the generator's own scheduler, busy with the other
// simulated runners (tens of thousands of goroutines while jobs drain):
// the generator's load, not the server's.

// probe is the subprocess of the probe runners, and the round trips it
// reported.
type probe struct {
	cmd     *exec.Cmd
	mu      sync.Mutex
	samples []sample
	failed  int
	first   string
	read    chan struct{} // closed once its output is read to the end
	once    sync.Once
}

// sample is one heartbeat round trip of a probe runner.
type sample struct {
	at time.Time // when it was sent
	d  time.Duration
}

// startProbe starts `scale probe`: count runners that register and then
// heartbeat every `every`, each round trip reported on its output. It
// returns once they are registered.
func startProbe(ctx context.Context, url, token string, count int, every time.Duration) (*probe, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, "probe", "-url", url, "-count", strconv.Itoa(count), "-every", every.String())
	cmd.Env = append(os.Environ(), "DSTACK_TOKEN="+token)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the probe runners: %w", err)
	}
	p := &probe{cmd: cmd, read: make(chan struct{})}
	ready := make(chan error, 1)
	go p.collect(out, ready)
	select {
	case err = <-ready:
	case <-time.After(time.Minute):
		err = errors.New("not registered within a minute")
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		p.stop()
		return nil, fmt.Errorf("probe runners: %w", err)
	}
	return p, nil
}

// collect reads the probe's lines: "ready", then "ok <sent unix ns> <round
// trip ns>" or "err <message>" per heartbeat.
func (p *probe) collect(out io.Reader, ready chan<- error) {
	defer close(p.read)
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		kind, rest, _ := strings.Cut(sc.Text(), " ")
		switch kind {
		case "ready":
			ready <- nil
		case "fatal":
			ready <- errors.New(rest)
		case "err":
			p.mu.Lock()
			if p.failed++; p.failed == 1 {
				p.first = rest
			}
			p.mu.Unlock()
		case "ok":
			at, d, ok := strings.Cut(rest, " ")
			ns, err1 := strconv.ParseInt(at, 10, 64)
			dn, err2 := strconv.ParseInt(d, 10, 64)
			if !ok || err1 != nil || err2 != nil {
				continue
			}
			p.mu.Lock()
			p.samples = append(p.samples, sample{at: time.Unix(0, ns), d: time.Duration(dn)})
			p.mu.Unlock()
		}
	}
	select {
	case ready <- errors.New("the probe process ended"):
	default:
	}
}

// quantiles returns p50 and p99 of the round trips sent in [from, to), and
// how many there were.
func (p *probe) quantiles(from, to time.Time) (p50, p99 time.Duration, n int) {
	p.mu.Lock()
	var ds []time.Duration
	for _, s := range p.samples {
		if !s.at.Before(from) && s.at.Before(to) {
			ds = append(ds, s.d)
		}
	}
	p.mu.Unlock()
	return percentiles(ds)
}

// failures returns how many heartbeats of the probe runners failed, and the
// first failure.
func (p *probe) failures() (int, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.failed, p.first
}

// stop ends the probe process and waits for its output; a second call
// does nothing.
func (p *probe) stop() {
	p.once.Do(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		<-p.read
		_ = p.cmd.Wait()
	})
}

// runProbe is `scale probe`: the probe runners' process. The admin token
// comes in DSTACK_TOKEN.
func runProbe(args []string) int {
	fs := flag.NewFlagSet("probe", flag.ExitOnError)
	url := fs.String("url", "", "the server's URL")
	count := fs.Int("count", 20, "probe runners")
	every := fs.Duration("every", 250*time.Millisecond, "time between two heartbeats of a probe runner")
	_ = fs.Parse(args)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var mu sync.Mutex
	w := bufio.NewWriter(os.Stdout)
	say := func(format string, args ...any) {
		mu.Lock()
		fmt.Fprintf(w, format+"\n", args...)
		_ = w.Flush()
		mu.Unlock()
	}
	admin, err := client.New(*url, os.Getenv("DSTACK_TOKEN"))
	if err != nil {
		say("fatal %v", err)
		return 1
	}
	res := api.HostResources{CPUs: 8, MemoryMiB: 32 << 10}
	rcs := make([]*client.Client, *count)
	for i := range rcs {
		reg, err := admin.RunnerRegister(ctx, api.RunnerRegisterRequest{Name: fmt.Sprintf("probe-%03d", i), Hostname: "scale-probe", Executor: "shell", Resources: res})
		if err != nil {
			say("fatal register probe runner %d: %v", i, err)
			return 1
		}
		rcs[i] = admin.WithToken(reg.Token)
	}
	say("ready")
	var wg sync.WaitGroup
	for _, rc := range rcs {
		wg.Go(func() {
			beat(ctx, rc, *every, nil, func(sent time.Time, d time.Duration, err error) {
				if err != nil {
					say("err heartbeat: %s", strings.ReplaceAll(err.Error(), "\n", " "))
				} else {
					say("ok %d %d", sent.UnixNano(), d.Nanoseconds())
				}
			})
		})
	}
	wg.Wait()
	return 0
}
