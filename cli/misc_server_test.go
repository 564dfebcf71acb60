package cli_test

import (
	"context"
	"crypto/rand"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/server"
	"github.com/dstackai/dstack/server/servertest"
	"github.com/dstackai/dstack/userconfig"
	"github.com/dstackai/dstack/version"
)

// TestRunnersRm: `dstack runners rm NAME` removes the offline runners of a
// name, keeps an online one saying why, and fails when nothing is offline.
func TestRunnersRm(t *testing.T) {
	t.Parallel()
	h := setup(t)
	srv := h.serve()
	ctx := context.Background()
	reg, err := srv.Client().RunnerRegister(ctx, api.RunnerRegisterRequest{Name: "box", Resources: api.HostResources{CPUs: 1, MemoryMiB: 512}})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Client().WithToken(reg.Token).RunnerOffline(ctx); err != nil {
		t.Fatal(err)
	}
	startRunner(t, srv, "box", nil) // the machine again, registered anew

	r := h.run("runners", "rm", "box")
	if r.code != 0 || !strings.Contains(r.stdout, "Removed runner box ("+reg.RunnerID+")") ||
		!strings.Contains(r.stderr, "Kept runner box") || !strings.Contains(r.stderr, "online") {
		t.Fatalf("runners rm box: %+v", r)
	}
	r = h.run("runners", "rm", "box")
	if r.code != 1 || !strings.Contains(r.stderr, "is online") {
		t.Fatalf("runners rm of an online runner: %+v", r)
	}
	r = h.run("runners", "rm", "nope")
	if r.code != 1 || !strings.Contains(r.stderr, `no runner is named "nope"`) {
		t.Fatalf("runners rm of an unknown runner: %+v", r)
	}
	if r = h.run("runners", "rm"); r.code != 2 {
		t.Fatalf("runners rm without a name: %+v", r)
	}
}

// TestVersionPrintsBoth: `dstack version` prints this CLI's version and the
// server's.
func TestVersionPrintsBoth(t *testing.T) {
	t.Parallel()
	h := setup(t)
	r := h.run("version")
	if r.code != 0 || !strings.Contains(r.stdout, "Client: "+version.Version) || !strings.Contains(r.stdout, "Server: none configured") {
		t.Fatalf("version without a server: %+v", r)
	}
	srv := h.serve()
	r = h.run("version")
	if r.code != 0 || !strings.Contains(r.stdout, "Server: "+version.Version+" ("+srv.URL+")") {
		t.Fatalf("version: %+v", r)
	}
}

// TestRunRefusesCodeOverTheServersLimitBeforeUploading: `dstack run` learns
// the server's limit first and refuses an archive over it without sending
// it, with the advice once; --max-code-size works after the workflow's
// name, in the units `dstack server --max-code-size` takes.
func TestRunRefusesCodeOverTheServersLimitBeforeUploading(t *testing.T) {
	t.Parallel()
	h := setup(t)
	var uploads atomic.Int64
	srv := servertest.Start(t, servertest.WithConfig(func(c *server.Config) { c.MaxCodeSize = 8 << 10 }))
	if err := userconfig.Save(h.configPath, &userconfig.Config{Server: countingProxy(t, srv.URL, "/api/v1/code", &uploads), Token: srv.AdminToken}); err != nil {
		t.Fatal(err)
	}
	h.writeFile(".dstack/workflows.yaml", testWorkflows)
	random := make([]byte, 64<<10) // incompressible
	_, _ = rand.Read(random)
	h.writeFile("data.bin", string(random))
	r := h.run("run", "hello", "--max-code-size", "1MB", "-d")
	if r.code != 1 || !strings.Contains(r.stderr, "over the server's limit of 8KiB") ||
		strings.Count(r.stderr, ".dstackignore") != 1 || !strings.Contains(r.stderr, "dstack server --max-code-size") {
		t.Fatalf("run over the server's limit: %+v", r)
	}
	if n := uploads.Load(); n != 0 {
		t.Fatalf("%d code uploads reached the server; want none", n)
	}
	// The option after the workflow's name is the run's, not a variable:
	// 1KB is under the data, so packing refuses it.
	r = h.run("run", "hello", "--max-code-size", "1KB")
	if r.code != 1 || !strings.Contains(r.stderr, "larger than the limit of 1000 B") {
		t.Fatalf("--max-code-size after the workflow: %+v", r)
	}
}

// countingProxy forwards to target and counts the requests to path.
func countingProxy(t *testing.T, target, path string, n *atomic.Int64) string {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(u)
	ps := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == path {
			n.Add(1)
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(ps.Close)
	return ps.URL
}
