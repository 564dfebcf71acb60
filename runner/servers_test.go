package runner

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/client"
	"github.com/dstackai/dstack/server"
	"github.com/dstackai/dstack/server/servertest"
	"github.com/dstackai/dstack/store/storetest"
)

// A runner given several addresses of one server (replicas sharing a
// PostgreSQL database, no load balancer) registers through the first that
// answers, and when that one goes away, carries on through the next: it
// claims the job submitted there and runs it to the end.
func TestRunnerMovesToTheNextServer(t *testing.T) {
	t.Parallel()
	dsn := storetest.PostgresDSN(t)
	a := servertest.Start(t, servertest.WithPostgres(dsn), servertest.WithConfig(func(c *server.Config) { c.ExternalURL = "http://dstack.example" }))
	b := a.StartReplica(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + l.Addr().String()
	l.Close()

	f := &fixture{srv: a, admin: a.Client()}
	f.cfg = Config{
		Server:    dead + "," + a.URL + "," + b.URL,
		Token:     a.AdminToken,
		Name:      "replicas",
		DataDir:   t.TempDir(),
		Resources: &api.HostResources{CPUs: 4, MemoryMiB: 8192, DiskMiB: 100 << 10},
		StopGrace: time.Second,
		ClaimWait: time.Second,
	}
	f.r = f.startRunner(t)
	if err := a.Server.Stop(); err != nil {
		t.Fatal(err)
	}

	// B has the admin (one database), and the code it is given.
	admin, err := client.New(b.URL, a.AdminToken)
	if err != nil {
		t.Fatal(err)
	}
	f.srv, f.admin = b, admin
	run := f.submit(t, f.uploadCode(t, nil), api.JobSpec{Workflow: "w", Commands: []string{"echo through the next address"}})
	j := f.waitStatus(t, run.Name, "w", finished)
	if j.Status != api.StatusDone || j.RunnerID != f.r.ID() {
		t.Fatalf("job %s (%s) on %q, want done on the runner %s", j.Status, j.StatusReason, j.RunnerID, f.r.ID())
	}
	if got := f.logs(t, j.ID); got != "through the next address\n" {
		t.Errorf("log %q, want %q", got, "through the next address\n")
	}
}

// The config refuses a list with an address that is not an http(s) URL,
// naming it.
func TestConfigServerList(t *testing.T) {
	t.Parallel()
	if err := ValidateServerURL("http://10.0.0.1:3000, https://10.0.0.2:3000"); err != nil {
		t.Errorf("two addresses: %v", err)
	}
	err := ValidateServerURL("http://10.0.0.1:3000,10.0.0.2:3000")
	if err == nil {
		t.Fatal("a list with 10.0.0.2:3000 (no scheme) was accepted")
	}
	if want := `server URL "10.0.0.2:3000" in "http://10.0.0.1:3000,10.0.0.2:3000" is not an http(s) URL`; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not say %q", err, want)
	}
}
