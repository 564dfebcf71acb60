package server_test

import (
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/dstackai/dstack/server"
	"github.com/dstackai/dstack/server/servertest"
)

// TestAlsoListen: the server serves on each of AlsoListen at its own port
// (as `dstack server` does on the Docker gateway for the local backend's
// containers), and starts anyway, with a warning, where it cannot listen.
func TestAlsoListen(t *testing.T) {
	t.Parallel()
	logs := &logBuffer{}
	srv := servertest.Start(t, servertest.WithLogger(slog.New(slog.NewTextHandler(logs, nil))),
		servertest.WithConfig(func(c *server.Config) { c.AlsoListen = []string{"127.0.0.2", "192.0.2.1"} }))
	u, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + net.JoinHostPort("127.0.0.2", u.Port()) + "/healthz")
	if err != nil {
		t.Fatalf("GET /healthz on the other address: %v", err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /healthz on the other address: %s", resp.Status)
	}
	if out := logs.String(); !strings.Contains(out, "cannot also listen on 192.0.2.1:"+u.Port()) || !strings.Contains(out, "--host 0.0.0.0") {
		t.Errorf("no warning for an address the server cannot listen on:\n%s", out)
	}
}
