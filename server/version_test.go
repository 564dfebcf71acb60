package server_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/client"
	"github.com/dstackai/dstack/server"
	"github.com/dstackai/dstack/server/servertest"
	"github.com/dstackai/dstack/version"
)

// TestVersionIsReported: GET /version (no token) and /healthz carry the
// build's version, and GET /version the code size limit; a runner of
// another version is registered with a warning in the server's log.
func TestVersionIsReported(t *testing.T) {
	t.Parallel()
	logs := &logBuffer{}
	e := setup(t, servertest.WithLogger(slog.New(slog.NewTextHandler(logs, nil))),
		servertest.WithConfig(func(c *server.Config) { c.MaxCodeSize = 12345 }))
	ctx := context.Background()
	anon, err := client.New(e.srv.URL, "")
	if err != nil {
		t.Fatal(err)
	}
	info, err := anon.ServerInfo(ctx)
	if err != nil {
		t.Fatalf("GET /version without a token: %v", err)
	}
	if info.Version != version.Version || info.MaxCodeSize != 12345 {
		t.Fatalf("GET /version = %+v, want version %q and max_code_size 12345", info, version.Version)
	}

	resp, err := http.Get(e.srv.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	var health map[string]string
	err = json.NewDecoder(resp.Body).Decode(&health)
	_ = resp.Body.Close()
	if err != nil || health["version"] != version.Version {
		t.Fatalf("/healthz = %v (%v), want version %q", health, err, version.Version)
	}

	const warning = "runner of another version registered"
	if _, err := e.admin.RunnerRegister(ctx, api.RunnerRegisterRequest{Name: "same", Version: version.Version, Resources: bigRunner}); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(logs.String(), warning) {
		t.Fatalf("a runner of the server's version was warned of:\n%s", logs)
	}
	if _, err := e.admin.RunnerRegister(ctx, api.RunnerRegisterRequest{Name: "old", Version: "v0.1.0", Resources: bigRunner}); err != nil {
		t.Fatal(err)
	}
	out := logs.String()
	if !strings.Contains(out, "level=WARN msg=\""+warning) || !strings.Contains(out, "runner_version=v0.1.0") {
		t.Fatalf("no warning of a runner of another version:\n%s", out)
	}
	rs, err := e.admin.RunnerList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		if r.Name == "old" && r.Version != "v0.1.0" {
			t.Fatalf("runner old lists version %q", r.Version)
		}
	}
}

// TestRunnerNamesAreChecked: names with control characters or over the
// length limit are refused with 400 and the reason.
func TestRunnerNamesAreChecked(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name, host, want string
	}{
		{name: "a\nb", want: "control character"},
		{name: "esc\x1b[31m", want: "control character"},
		{name: "del\x7f", want: "control character"},
		{name: "c1\u009bx", want: "control character"},
		{name: strings.Repeat("n", api.MaxRunnerName+1), want: "the most is 200"},
		{name: "  ", want: "empty"},
		{name: "ok", host: "h\r\nx", want: "hostname"},
	} {
		_, err := e.admin.RunnerRegister(ctx, api.RunnerRegisterRequest{Name: tc.name, Hostname: tc.host, Resources: bigRunner})
		if !client.IsCode(err, api.CodeInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("register %q (host %q): %v, want invalid with %q", tc.name, tc.host, err, tc.want)
		}
	}
	if _, err := e.admin.RunnerRegister(ctx, api.RunnerRegisterRequest{Name: "gpu-box é 1", Resources: bigRunner}); err != nil {
		t.Errorf("a name of letters, digits and spaces: %v", err)
	}
}
