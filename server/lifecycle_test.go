package server_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/server"
)

// Ending the context given to Start stops the server as Stop does: it
// stops listening, and its loops and autoscaler end (TestMain's goleak
// check would see them otherwise).
func TestCancellingTheStartContextStopsTheServer(t *testing.T) {
	t.Parallel()
	srv, err := server.New(context.Background(), server.Config{Host: "127.0.0.1", DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	url := srv.URL() + api.PathPrefix + "/version"
	resp, err := http.Get(url) //nolint:noctx // a plain request to a local server
	if err != nil {
		t.Fatalf("server not answering once started: %v", err)
	}
	resp.Body.Close()

	cancel()
	<-srv.Done()
	if resp, err := http.Get(url); err == nil { //nolint:noctx // a plain request to a local server
		resp.Body.Close()
		t.Errorf("server still answers (%s) after its start context ended", resp.Status)
	}
	if err := srv.Stop(); err != nil {
		t.Errorf("Stop after the context ended: %v", err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Errorf("a second Start returned %v, want the first's result", err)
	}
}
