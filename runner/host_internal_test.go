package runner

import (
	"os"
	"testing"
)

// TestReportedHostInPod: a runner in a Kubernetes runner Pod reports its
// node as its host, so `dstack runners` shows where it runs.
func TestReportedHostInPod(t *testing.T) {
	t.Setenv(EnvNodeName, "ip-10-0-1-7.ec2.internal")
	if got := reportedHost(); got != "ip-10-0-1-7.ec2.internal" {
		t.Errorf("reportedHost() = %q, want the node", got)
	}
	t.Setenv(EnvNodeName, "")
	if host, _ := os.Hostname(); reportedHost() != host {
		t.Errorf("reportedHost() = %q without a node, want %q", reportedHost(), host)
	}
}
