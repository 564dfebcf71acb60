package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"os/exec"
	"strings"
	"testing"
)

// TestVersionStamp: the version the binaries were built with is what
// `dstack -v`, `dstack version`, `dstack-runner version`, the server's
// /healthz and the runner's registration report.
func TestVersionStamp(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test: skipped with -short")
	}
	t.Parallel()
	c := newCluster(t, "")
	c.startRunner("r1")

	if r := c.dstack("", "-v"); r.code != 0 || !strings.Contains(r.stdout, stampedVersion) {
		t.Errorf("dstack -v does not print %s:\n%s", stampedVersion, r)
	}
	r := c.dstack("", "version")
	if r.code != 0 || !strings.Contains(r.stdout, "Client: "+stampedVersion) || !strings.Contains(r.stdout, "Server: "+stampedVersion) {
		t.Errorf("dstack version does not print both versions as %s:\n%s", stampedVersion, r)
	}
	if strings.Contains(r.stderr, "another version") {
		t.Errorf("dstack version warns of a version mismatch between equal builds:\n%s", r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, bins.runner, "version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), stampedVersion) {
		t.Errorf("dstack-runner version: %v\n%s", err, out)
	}
	resp, err := http.Get(c.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	var health map[string]string
	err = json.NewDecoder(resp.Body).Decode(&health)
	_ = resp.Body.Close()
	if err != nil || health["version"] != stampedVersion {
		t.Errorf("/healthz = %v (%v), want version %s", health, err, stampedVersion)
	}
	for _, rn := range c.runners() {
		if rn.Version != stampedVersion {
			t.Errorf("runner %s reports version %q, want %s", rn.Name, rn.Version, stampedVersion)
		}
	}
	if strings.Contains(c.server.output(), "runner of another version") {
		t.Errorf("the server warned of a runner of its own version:\n%s", c.server.output())
	}
}
