package runner

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
)

// unreachableURL is a loopback address nothing listens on.
func unreachableURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

func newTestRunner(t *testing.T) *Runner {
	t.Helper()
	r, err := New(Config{
		Server: unreachableURL(t), Token: "T", Name: "n", DataDir: t.TempDir(),
		Resources: &api.HostResources{CPUs: 1, MemoryMiB: 1024},
	}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestStopBeforeStart(t *testing.T) {
	t.Parallel()
	r := newTestRunner(t)
	r.Stop()
	r.Stop()
	if err := r.Start(context.Background()); err == nil {
		t.Error("Start after Stop succeeded")
	}
}

func TestStopEndsAStartThatWaitsForTheServer(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		stop func(*Runner, context.CancelFunc)
	}{
		{"Stop", func(r *Runner, _ context.CancelFunc) { r.Stop() }},
		{"context", func(_ *Runner, cancel context.CancelFunc) { cancel() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := newTestRunner(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			errc := make(chan error, 1)
			go func() { errc <- r.Start(ctx) }()
			// Start keeps retrying against a server that is not there.
			select {
			case err := <-errc:
				t.Fatalf("Start returned %v while the server is down", err)
			case <-time.After(300 * time.Millisecond):
			}
			tt.stop(r, cancel)
			if err := <-errc; err == nil {
				t.Error("Start succeeded")
			}
			r.Stop()
			<-r.Done()
		})
	}
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	if _, err := New(Config{Server: "localhost", Token: "T", Name: "n", DataDir: "/x"}, nil); err == nil {
		t.Error("New accepted a server without a scheme")
	}
}
