package cli

import (
	"fmt"
	"io"
	"time"
)

// DefaultWaitServer is how long `dstack run` and `dstack logs -f` keep
// trying a server they lost while following a run, unless --wait-server
// says otherwise.
const DefaultWaitServer = 10 * time.Minute

// ExitServerLost is the exit code of `dstack run` and `dstack logs -f` when
// they gave up on a server they lost: the run itself goes on.
const ExitServerLost = 3

// parseWaitServer reads --wait-server: a duration such as 30s or 10m; 0
// gives up at the first failure.
func parseWaitServer(v string) (time.Duration, error) {
	if v == "" {
		return DefaultWaitServer, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, usagef("--wait-server %q is not a duration: give one such as 30s, 10m or 1h", v)
	}
	return d, nil
}

// serverWait is what a command following a run does when the server goes
// away (a failure client.Retryable says may pass: it cannot be reached, or
// answers 429, 500, 502, 503, 504 or 507): the run goes on
// without the follower, so it says so once, keeps trying with backoff for
// up to window, and gives up with ExitServerLost. Calls that succeed end the
// outage.
type serverWait struct {
	window time.Duration
	run    string
	url    string
	stderr io.Writer
	now    func() time.Time

	since time.Time // when the current outage began; zero when none
}

func (e *Env) newServerWait(c *apiClient, run string, window time.Duration) *serverWait {
	return &serverWait{window: window, run: run, url: c.BaseURL(), stderr: e.Stderr, now: e.Now}
}

// failed records a failed call that client.Retryable says may succeed later. It
// returns nil while the call should be tried again, and an error that ends
// the command with ExitServerLost once the outage has lasted window.
func (w *serverWait) failed(err error) error {
	now := w.now()
	if w.since.IsZero() {
		w.since = now
		fmt.Fprintf(w.stderr, "Lost the dstack server: %v\n", err)
		fmt.Fprintf(w.stderr, "Run %s goes on without this command. Retrying for up to %s (--wait-server); `dstack logs %s -f` follows it again later.\n",
			w.run, formatDuration(w.window), w.run)
	}
	if now.Sub(w.since) >= w.window {
		return &exitError{code: ExitServerLost, msg: fmt.Sprintf(
			"gave up on the dstack server at %s after %s without an answer (%v); run %s goes on: follow it again with `dstack logs %s -f` once the server is back",
			w.url, formatDuration(now.Sub(w.since)), err, w.run, w.run)}
	}
	return nil
}

// ok records a call that succeeded: an outage, if any, is over.
func (w *serverWait) ok() {
	if !w.since.IsZero() {
		fmt.Fprintf(w.stderr, "Reached the dstack server again; following run %s.\n", w.run)
		w.since = time.Time{}
	}
}
