package cli

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/dstackai/dstack/client"
)

func TestServerWait(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var stderr bytes.Buffer
	w := &serverWait{window: time.Minute, run: "calm-cat-1", url: "http://127.0.0.1:3000", stderr: &stderr, now: func() time.Time { return now }}
	lost := &client.UnreachableError{URL: w.url, Err: errors.New("connection refused")}

	// Within the window: keep trying; it is told once.
	for range 3 {
		if err := w.failed(lost); err != nil {
			t.Fatalf("failed within the window: %v", err)
		}
		now = now.Add(10 * time.Second)
	}
	if n := strings.Count(stderr.String(), "Run calm-cat-1 goes on without this command"); n != 1 {
		t.Errorf("told %d times that the run goes on, want once:\n%s", n, stderr.String())
	}
	if !strings.Contains(stderr.String(), "`dstack logs calm-cat-1 -f` follows it again later") {
		t.Errorf("stderr does not say how to follow the run again:\n%s", stderr.String())
	}

	// An answer ends the outage: the window starts again at the next one.
	w.ok()
	if !strings.Contains(stderr.String(), "Reached the dstack server again") {
		t.Errorf("the end of the outage is not told:\n%s", stderr.String())
	}
	now = now.Add(time.Hour)
	if err := w.failed(lost); err != nil {
		t.Fatalf("the first failure of a new outage: %v", err)
	}
	now = now.Add(59 * time.Second)
	if err := w.failed(lost); err != nil {
		t.Fatalf("59s into a 1m window: %v", err)
	}
	now = now.Add(time.Second)
	err := w.failed(lost)
	var ex *exitError
	if !errors.As(err, &ex) || ex.code != ExitServerLost || !strings.Contains(ex.msg, "run calm-cat-1 goes on") {
		t.Fatalf("at the end of the window: %v, want exit %d saying the run goes on", err, ExitServerLost)
	}

	// A window of 0 gives up at the first failure.
	z := &serverWait{run: "r", stderr: &bytes.Buffer{}, now: func() time.Time { return now }}
	if err := z.failed(lost); !errors.As(err, &ex) || ex.code != ExitServerLost {
		t.Errorf("--wait-server 0: %v, want exit %d at once", err, ExitServerLost)
	}
}

func TestParseWaitServer(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"", DefaultWaitServer, true},
		{"30s", 30 * time.Second, true},
		{"1h30m", 90 * time.Minute, true},
		{"0", 0, true},
		{"-1s", 0, false},
		{"10", 0, false},
		{"soon", 0, false},
	} {
		got, err := parseWaitServer(tc.in)
		if tc.ok && (err != nil || got != tc.want) {
			t.Errorf("parseWaitServer(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
		var ue *usageError
		if !tc.ok && !errors.As(err, &ue) {
			t.Errorf("parseWaitServer(%q) = %v, %v; want a usage error", tc.in, got, err)
		}
	}
}

func FuzzParseWaitServer(f *testing.F) {
	for _, s := range []string{"", "10m", "0", "-5s", "1h2m3s", "1e9"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := parseWaitServer(s)
		if err != nil {
			var ue *usageError
			if !errors.As(err, &ue) || !strings.Contains(err.Error(), "--wait-server") {
				t.Fatalf("error %v is not a usage error naming the flag", err)
			}
			return
		}
		if d < 0 {
			t.Fatalf("accepted a negative duration %v for %q", d, s)
		}
	})
}
