// Package archtest keeps the architecture honest: the CLI and the runner
// reach the server only through the public API client, and the runner,
// installed on every machine that runs jobs, stays small: it links neither
// the server, nor go-git, nor the AWS SDK.
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

// TestRunnerStaysSmall: the runner binary links no server package, no
// go-git (the CLI packs code; the runner only unpacks it) and no AWS SDK
// (it reads the instance metadata with a plain HTTP client).
func TestRunnerStaysSmall(t *testing.T) {
	t.Parallel()
	forbidden := []struct{ prefix, why string }{
		{module + "/server", "the server"},
		{"github.com/go-git/", "go-git"},
		{"github.com/aws/aws-sdk-go-v2", "the AWS SDK"},
		{"github.com/aws/smithy-go", "the AWS SDK"},
	}
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", "../cmd/dstack-runner").CombinedOutput()
	if err != nil {
		t.Fatalf("go list cmd/dstack-runner: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, f := range forbidden {
			if dep == f.prefix || strings.HasPrefix(dep, strings.TrimSuffix(f.prefix, "/")+"/") {
				t.Errorf("cmd/dstack-runner links %s (%s): keep it out of the runner's imports", dep, f.why)
			}
		}
	}
}
