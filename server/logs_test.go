package server_test

import (
	"context"
	"strings"
	"testing"

	"github.com/dstackai/dstack/server"
	"github.com/dstackai/dstack/server/servertest"
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
