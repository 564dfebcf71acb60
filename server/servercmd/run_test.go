package servercmd

import (
	"bytes"
	"context"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/server"
)

// announceWriter keeps what is written and closes running once the server
// says where it runs.
type announceWriter struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	running chan struct{}
	once    sync.Once
}

func (w *announceWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n, err := w.buf.Write(p)
	if strings.Contains(w.buf.String(), "The dstack server is running at ") {
		w.once.Do(func() { close(w.running) })
	}
	return n, err
}

func (w *announceWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// TestRunStopsWhenItsContextEnds is `dstack server` on SIGINT or SIGTERM
// (which end run's context): it says it stops, stops serving and returns
// with no error.
func TestRunStopsWhenItsContextEnds(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := server.Defaults
	cfg.Port, cfg.DataDir = 0, filepath.Join(dir, "server")
	cfg.AWS.Disabled = true
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &announceWriter{running: make(chan struct{})}
	errc := make(chan error, 1)
	go func() { errc <- run(ctx, out, cfg, "") }()
	select {
	case <-out.running:
	case err := <-errc:
		t.Fatalf("run returned %v before it started", err)
	}
	url := regexp.MustCompile(`running at (\S+)`).FindStringSubmatch(out.String())[1]

	cancel()
	if err := <-errc; err != nil {
		t.Errorf("run returned %v", err)
	}
	if !strings.Contains(out.String(), "Stopping the dstack server...") {
		t.Errorf("output does not say the server stops:\n%s", out.String())
	}
	if resp, err := http.Get(url + api.PathPrefix + "/version"); err == nil { //nolint:noctx // a plain request to a local server
		resp.Body.Close()
		t.Errorf("server still answers (%s) after run returned", resp.Status)
	}
}
