package cli_test

import (
	"context"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/client"
	"github.com/dstackai/dstack/internal/testutil"
	"github.com/dstackai/dstack/server"
	"github.com/dstackai/dstack/server/servertest"
	"github.com/dstackai/dstack/store/storetest"
	"github.com/dstackai/dstack/userconfig"
)

// TestLogsFollowAcrossAReplicaFailover: `dstack logs -f` follows through
// replica A while the runner writes through replica B, both on one
// PostgreSQL. A goes away and another server takes its address (a load
// balancer's failover, or a restart), with the replicas' key and storage:
// the follower resumes at the byte it stopped at and prints every line once.
func TestLogsFollowAcrossAReplicaFailover(t *testing.T) {
	t.Parallel()
	dsn := storetest.PostgresDSN(t)
	h := setup(t)
	a := servertest.Start(t, servertest.WithPostgres(dsn), servertest.WithConfig(func(c *server.Config) { c.ExternalURL = "http://dstack.example" }))
	if err := userconfig.Save(h.configPath, &userconfig.Config{Server: a.URL, Token: a.AdminToken}); err != nil {
		t.Fatal(err)
	}
	b := a.StartReplica(t)
	adminB, err := client.New(b.URL, a.AdminToken)
	if err != nil {
		t.Fatal(err)
	}
	h.writeFile(".dstack/workflows.yaml", testWorkflows)
	name := runName(t, h.run("run", "-d", "hello"))

	// The runner, through B.
	ctx := context.Background()
	res := api.HostResources{CPUs: 4, MemoryMiB: 8 << 10, DiskMiB: 100 << 10}
	reg, err := adminB.RunnerRegister(ctx, api.RunnerRegisterRequest{Name: "r", Hostname: "r.local", Executor: "shell", Version: "test", Resources: res})
	if err != nil {
		t.Fatal(err)
	}
	rc := adminB.WithToken(reg.Token)
	var as *api.Assignment
	testutil.EventuallyErr(t, "the runner to claim the job", func() error {
		as, err = rc.RunnerClaim(ctx, api.ClaimRequest{Free: res, Wait: api.Duration(time.Second)})
		if err == nil && as == nil {
			err = fmt.Errorf("no job yet")
		}
		return err
	})
	if _, err := rc.JobSetStatus(ctx, as.Job.ID, as.Lease, api.JobStatusUpdate{Status: api.StatusRunning}); err != nil {
		t.Fatal(err)
	}
	var off int64
	var want strings.Builder
	write := func(line string) {
		t.Helper()
		n, err := rc.JobLogAppend(ctx, as.Job.ID, as.Lease, off, []byte(line+"\n"))
		if err != nil {
			t.Fatalf("append %q: %v", line, err)
		}
		off = n
		want.WriteString(line + "\n")
	}

	// The follower, through A.
	var stdout, stderr lockedBuffer
	code := make(chan int, 1)
	fctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	go func() { code <- h.env(&stdout, &stderr).Run(fctx, []string{"logs", name, "-f"}) }()
	for i := 1; i <= 3; i++ {
		write(fmt.Sprintf("line %d", i))
	}
	testutil.Eventually(t, "logs -f through A to print the lines written through B", func() bool { return stdout.String() == want.String() })

	if err := a.Server.Stop(); err != nil {
		t.Fatalf("stop A: %v", err)
	}
	write("line 4") // while the follower has no server
	u, err := url.Parse(a.URL)
	if err != nil {
		t.Fatal(err)
	}
	port, _ := strconv.Atoi(u.Port())
	a.StartReplica(t, servertest.WithConfig(func(c *server.Config) { c.Port = port }))
	write("line 5")
	testutil.Eventually(t, "logs -f to print the lines written during and after the failover", func() bool { return stdout.String() == want.String() })
	write("line 6")
	if _, err := rc.JobSetStatus(ctx, as.Job.ID, as.Lease, api.JobStatusUpdate{Status: api.StatusDone}); err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-code:
		if c != 0 {
			t.Fatalf("logs -f exited %d:\n%s", c, stderr.String())
		}
	case <-time.After(testutil.Wait):
		t.Fatalf("logs -f did not end with the run:\n%s", stderr.String())
	}
	if got := stdout.String(); got != want.String() {
		t.Errorf("logs -f printed\n%s\nwant every line once, in order:\n%s", got, want.String())
	}
	if !strings.Contains(stderr.String(), "RUN "+name+" done") {
		t.Errorf("logs -f said %q, want the run's end", stderr.String())
	}
}
