// Package archtest keeps the architecture honest: the CLI and the runner
// reach the server only through the public API client.
package archtest

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/dstackai/dstack"

func TestClientsUseOnlyTheAPI(t *testing.T) {
	t.Parallel()
	forbidden := []string{module + "/server", module + "/store", module + "/logstore", module + "/blob"}
	for _, pkg := range []string{"cli", "runner", "runner/runnercli", "executor", "hostinfo", "client", "cmd/dstack-runner"} {
		t.Run(pkg, func(t *testing.T) {
			t.Parallel()
			out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", "../"+pkg).CombinedOutput()
			if err != nil {
				t.Fatalf("go list %s: %v\n%s", pkg, err, out)
			}
			for _, dep := range strings.Fields(string(out)) {
				for _, f := range forbidden {
					if dep == f || strings.HasPrefix(dep, f+"/") {
						t.Errorf("%s imports %s: it must talk to the server only through %s/client", pkg, dep, module)
					}
				}
			}
		})
	}
}
