package cli_test

import (
	"context"
	"strings"
	"testing"

	"github.com/dstackai/dstack/api"
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
