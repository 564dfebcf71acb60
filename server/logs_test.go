package server_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/client"
	"github.com/dstackai/dstack/internal/testutil"
	"github.com/dstackai/dstack/server"
	"github.com/dstackai/dstack/server/servertest"
	"github.com/dstackai/dstack/store/storetest"
)

// eachLogStore runs a test of logs on each store of them: files in the
// data directory, and the database's table (here SQLite's; the suites of
// package logstore and the replica tests run it on PostgreSQL).
func eachLogStore(t *testing.T, fn func(t *testing.T, logs servertest.Option)) {
	for _, kind := range []string{server.LogStoreFiles, server.LogStoreDatabase} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			fn(t, withLogStore(kind))
		})
	}
}

func withLogStore(kind string) servertest.Option {
	return servertest.WithConfig(func(c *server.Config) { c.LogStore = kind })
}

// TestDatabaseLogsCountAndGoWithTheirRun: a log in the database counts in
// its user's storage, and deleting its run frees it.
func TestDatabaseLogsCountAndGoWithTheirRun(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := setup(t, withLogStore(server.LogStoreDatabase))
	alice, _, aliceID := member(t, e.srv, "alice")
	codeID := uploadCode(t, alice)
	rc := registerRunner(t, alice, "r1")
	run := e.finishedRun(t, alice, rc, codeID) // 900 bytes of log, 5000 of artifact
	jobID := run.Jobs[0].ID
	if got := jobLog(t, alice, jobID); len(got) != 900 {
		t.Fatalf("log = %d bytes, want 900", len(got))
	}
	for f := range dataFiles(t, e.srv) {
		if strings.HasPrefix(f, "logs/") {
			t.Errorf("a log file with the database's log store: %s", f)
		}
	}
	used := mustUsage(t, e.srv, aliceID)
	if used < 5900 {
		t.Errorf("alice's usage = %d, want her log's 900 bytes counted with her artifact and code", used)
	}
	res, err := alice.RunDelete(ctx, run.Name, false)
	if err != nil {
		t.Fatalf("rm: %v", err)
	}
	if res.FreedBytes < 5900 {
		t.Errorf("rm freed %d bytes, want the log's 900 and the artifact's 5000 at least", res.FreedBytes)
	}
	if n, err := e.srv.Store().LogSize(ctx, jobID); err != nil || n != 0 {
		t.Errorf("the log's size after rm = %d, %v; want it gone", n, err)
	}
	if u := mustUsage(t, e.srv, aliceID); u != 0 {
		t.Errorf("alice's usage after rm = %d, want 0", u)
	}
}

// replica starts another replica of srv, on its database, and returns it with a client of srv's admin.
func replica(t *testing.T, srv *servertest.Server) (*servertest.Server, *client.Client) {
	t.Helper()
	b := srv.StartReplica(t)
	c, err := client.New(b.URL, srv.AdminToken)
	if err != nil {
		t.Fatal(err)
	}
	return b, c
}

// TestLogsFollowedThroughAnotherReplica: two replicas on one PostgreSQL;
// the runner appends through one, a user follows through the other, and
// sees every line once and the end of the job.
func TestLogsFollowedThroughAnotherReplica(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dsn := storetest.PostgresDSN(t)
	e := setup(t, servertest.WithPostgres(dsn), behindBalancer)
	b, adminB := replica(t, e.srv)
	run := e.submit(t, e.admin, bashJob("train"))
	token := registerRunnerToken(t, e.admin, "r")
	rc := e.admin.WithToken(token)
	a := claim(t, rc)
	setStatus(t, rc, a, api.StatusRunning)
	f := follow(t, adminB, run.Jobs[0].ID, client.LogOptions{})
	var off int64
	var want strings.Builder
	for i := range 3 {
		line := fmt.Sprintf("epoch %d\n", i)
		n, err := rc.JobLogAppend(ctx, a.Job.ID, a.Lease, off, []byte(line))
		if err != nil {
			t.Fatal(err)
		}
		off = n
		want.WriteString(line)
		testutil.Eventually(t, "the other replica's follower to see "+strings.TrimSpace(line), func() bool { return f.String() == want.String() })
	}
	if f.ended() {
		t.Fatal("the follower ended while the job runs")
	}
	// A chunk resent through the other replica (a runner that failed over)
	// is kept once, and the next goes on from there.
	clientB, err := client.New(b.URL, token)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := clientB.JobLogAppend(ctx, a.Job.ID, a.Lease, 0, []byte(want.String())); err != nil || n != off {
		t.Fatalf("resend through the other replica = %d, %v; want size %d", n, err, off)
	}
	if _, err := clientB.JobLogAppend(ctx, a.Job.ID, a.Lease, off, []byte("saved\n")); err != nil {
		t.Fatal(err)
	}
	want.WriteString("saved\n")
	setStatus(t, rc, a, api.StatusDone)
	testutil.Eventually(t, "the follower to end with the job", f.ended)
	if err := <-f.done; err != nil {
		t.Errorf("follower: %v", err)
	}
	if got := f.String(); got != want.String() {
		t.Errorf("follower read %q, want %q", got, want.String())
	}
	if got := jobLog(t, e.admin, a.Job.ID); got != want.String() {
		t.Errorf("the first replica reads %q, want %q", got, want.String())
	}
}

// TestSwitchToDatabaseLogsKeepsTheFiles: a server that kept its logs in
// files restarts keeping them in the database: the old logs read as before,
// and a job that was running goes on appending where its log was.
func TestSwitchToDatabaseLogsKeepsTheFiles(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := setup(t, withLogStore(server.LogStoreFiles))
	token := registerRunnerToken(t, e.admin, "r")
	rc := e.admin.WithToken(token)
	done := e.finishedRun(t, e.admin, rc, e.codeID)
	e.submit(t, e.admin, bashJob("long"))
	a := claim(t, rc)
	setStatus(t, rc, a, api.StatusRunning)
	if _, err := rc.JobLogAppend(ctx, a.Job.ID, a.Lease, 0, []byte("before\n")); err != nil {
		t.Fatal(err)
	}
	if err := e.srv.Server.Stop(); err != nil {
		t.Fatal(err)
	}

	srv := servertest.Start(t, withLogStore(server.LogStoreDatabase), servertest.WithConfig(func(c *server.Config) { c.DataDir = e.srv.DataDir }))
	admin, err := client.New(srv.URL, e.srv.AdminToken)
	if err != nil {
		t.Fatal(err)
	}
	rc, err = client.New(srv.URL, token)
	if err != nil {
		t.Fatal(err)
	}
	if got := jobLog(t, admin, done.Jobs[0].ID); got != strings.Repeat("log line\n", 100) {
		t.Errorf("a finished job's log from the files reads %d bytes, want its 900", len(got))
	}
	if n, err := rc.JobLogAppend(ctx, a.Job.ID, a.Lease, 7, []byte("after\n")); err != nil || n != 13 {
		t.Fatalf("append where the log was = %d, %v; want size 13", n, err)
	}
	if got := jobLog(t, admin, a.Job.ID); got != "before\nafter\n" {
		t.Errorf("the running job's log reads %q", got)
	}
}

// BenchmarkLogAppend measures a runner's log appends over HTTP, 200 bytes
// each (a few lines, as a quiet job sends them), one job at a time and from
// 20 jobs at once, with the logs in files and in the database (SQLite's,
// and PostgreSQL's where DSTACK_TEST_POSTGRES_DSN is set).
func BenchmarkLogAppend(b *testing.B) {
	for _, store := range []string{"files", "db-sqlite", "db-postgres"} {
		for _, jobs := range []int{1, 20} {
			b.Run(fmt.Sprintf("%s/jobs=%d", store, jobs), func(b *testing.B) {
				opts := []servertest.Option{servertest.WithHeartbeatTimeout(time.Hour)}
				switch store {
				case "db-sqlite":
					opts = append(opts, withLogStore(server.LogStoreDatabase))
				case "db-postgres":
					opts = append(opts, servertest.WithPostgres(storetest.PostgresDSN(b)))
				}
				srv := servertest.Start(b, opts...)
				admin := srv.Client()
				ctx := context.Background()
				code := uploadCode(b, admin)
				type writer struct {
					rc  *client.Client
					a   *api.Assignment
					off int64
				}
				ws := make(chan *writer, jobs)
				for i := range jobs {
					res := api.HostResources{CPUs: 8, MemoryMiB: 32 << 10}
					reg, err := admin.RunnerRegister(ctx, api.RunnerRegisterRequest{Name: fmt.Sprintf("r%d", i), Resources: res})
					if err != nil {
						b.Fatal(err)
					}
					rc := admin.WithToken(reg.Token)
					if _, err := admin.RunSubmit(ctx, api.RunSubmitRequest{CodeID: code, Workflow: "w", Jobs: []api.JobSpec{{Workflow: "w", Provider: "bash", Commands: []string{"true"}}}}); err != nil {
						b.Fatal(err)
					}
					a, err := rc.RunnerClaim(ctx, api.ClaimRequest{Free: res, Wait: api.Duration(10 * time.Second)})
					if err != nil || a == nil {
						b.Fatalf("claim: %v", err)
					}
					ws <- &writer{rc: rc, a: a}
				}
				chunk := []byte(strings.Repeat("a log line of forty bytes, or about so\n", 6)[:200])
				b.SetBytes(int64(len(chunk)))
				b.SetParallelism((jobs + 1) / 2) // GOMAXPROCS is 2 here
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					w := <-ws
					defer func() { ws <- w }()
					for pb.Next() {
						n, err := w.rc.JobLogAppend(ctx, w.a.Job.ID, w.a.Lease, w.off, chunk)
						if err != nil {
							b.Error(err)
							return
						}
						w.off = n
					}
				})
			})
		}
	}
}

// A finished job's log counts in its user's storage, on either store: the
// quota sees the bytes a runner sent (a log in the database is sized by the
// job's end itself).
func TestFinishedJobsLogCountsInUsage(t *testing.T) {
	eachLogStore(t, func(t *testing.T, logs servertest.Option) {
		ctx := context.Background()
		e := setup(t, logs)
		alice, _, aliceID := member(t, e.srv, "alice")
		codeID := uploadCode(t, alice)
		rc := registerRunner(t, alice, "r1")
		before := mustUsage(t, e.srv, aliceID)
		if _, err := alice.RunSubmit(ctx, api.RunSubmitRequest{Workflow: "a", CodeID: codeID, Jobs: []api.JobSpec{bashJob("a")}}); err != nil {
			t.Fatal(err)
		}
		a := claim(t, rc)
		out := []byte(strings.Repeat("log line\n", 100))
		if _, err := rc.JobLogAppend(ctx, a.Job.ID, a.Lease, 0, out); err != nil {
			t.Fatalf("log: %v", err)
		}
		setStatus(t, rc, a, api.StatusDone)
		// A log file holds its records' headers too.
		if got := mustUsage(t, e.srv, aliceID) - before; got < int64(len(out)) || got > int64(len(out))*11/10 {
			t.Errorf("usage grew by %d bytes with the job's end, want its log's %d", got, len(out))
		}
	})
}
