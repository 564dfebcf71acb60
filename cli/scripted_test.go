package cli_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/client"
	"github.com/dstackai/dstack/internal/clock"
	"github.com/dstackai/dstack/server/servertest"
	"github.com/dstackai/dstack/userconfig"
)

// A scripted runner speaks the runner protocol to a real server through
// package client, but instead of running commands it plays a script per
// workflow: it writes the script's log lines, uploads its artifacts and
// exits with its code. It lets the CLI's tests drive whole runs quickly and
// deterministically; package runner's own tests cover real execution.

type jobScript struct {
	logs      []string          // lines written, in order
	artifacts map[string][]byte // path -> content, uploaded at the end
	exitCode  int
	// untilStopped keeps the job running until the user stops it; the
	// started channel, if set, is closed once its logs are written.
	untilStopped bool
	started      chan struct{}
	// unsent lines are not sent before the job's end, which is reported
	// with them as the log's missing part; send then sends them.
	unsent []string
	send   chan func(ctx context.Context) error
}

// serve starts a dstack server for the test and configures the harness to
// talk to it with the admin's token.
func (h *harness) serve() *servertest.Server {
	h.t.Helper()
	srv := servertest.Start(h.t)
	if err := userconfig.Save(h.configPath, &userconfig.Config{Server: srv.URL, Token: srv.AdminToken}); err != nil {
		h.t.Fatal(err)
	}
	return srv
}

// startRunner registers a scripted runner named name and serves jobs until
// the test ends.
func startRunner(t *testing.T, srv *servertest.Server, name string, scripts map[string]*jobScript) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	res := api.HostResources{CPUs: 4, MemoryMiB: 8 << 10, DiskMiB: 100 << 10, GPUs: []api.GPU{{Name: "T4", MemoryMiB: 16 << 10}}}
	reg, err := srv.Client().RunnerRegister(ctx, api.RunnerRegisterRequest{
		Name: name, Hostname: name + ".local", Executor: "shell", Version: "test", Resources: res,
	})
	if err != nil {
		cancel()
		t.Fatalf("register runner: %v", err)
	}
	rc := srv.Client().WithToken(reg.Token)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			_ = rc.RunnerHeartbeat(ctx, api.HeartbeatRequest{})
			a, err := rc.RunnerClaim(ctx, api.ClaimRequest{Free: res, Wait: api.Duration(time.Second)})
			if err != nil || a == nil {
				if err != nil && ctx.Err() == nil {
					t.Logf("runner %s: claim: %v", name, err)
					_ = clock.Sleep(ctx, 100*time.Millisecond)
				}
				continue
			}
			s := scripts[a.Job.Workflow]
			if s == nil {
				s = &jobScript{}
			}
			if err := playJob(ctx, rc, a, s); err != nil && ctx.Err() == nil {
				t.Errorf("runner %s: job %s (%s): %v", name, a.Job.ID, a.Job.Workflow, err)
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
}

func playJob(ctx context.Context, rc *client.Client, a *api.Assignment, s *jobScript) error {
	id, lease := a.Job.ID, a.Lease
	if _, err := rc.JobSetStatus(ctx, id, lease, api.JobStatusUpdate{Status: api.StatusRunning}); err != nil {
		return fmt.Errorf("set running: %w", err)
	}
	var offset int64
	for _, line := range s.logs {
		n, err := rc.JobLogAppend(ctx, id, lease, offset, []byte(line+"\n"))
		if err != nil {
			return fmt.Errorf("append log: %w", err)
		}
		offset = n
	}
	if s.started != nil {
		close(s.started)
	}
	final := api.JobStatusUpdate{Status: api.StatusDone, ExitCode: &s.exitCode}
	if s.exitCode != 0 {
		final.Status = api.StatusFailed
	}
	var late []byte
	for _, line := range s.unsent {
		late = append(late, line+"\n"...)
	}
	if len(late) > 0 {
		final.LogUnsent, final.LogEnd = int64(len(late)), offset+int64(len(late))
		defer func() {
			s.send <- func(ctx context.Context) error {
				_, err := rc.JobLogAppend(ctx, id, lease, offset, late)
				return err
			}
		}()
	}
	if s.untilStopped {
		for {
			sig, err := rc.JobWaitStop(ctx, id, lease, time.Second)
			if err != nil {
				return fmt.Errorf("wait for stop: %w", err)
			}
			if sig.Stop {
				final = api.JobStatusUpdate{Status: api.StatusStopped}
				if sig.Abort {
					final.Status = api.StatusAborted
				}
				break
			}
		}
	}
	if final.Status != api.StatusAborted {
		for p, b := range s.artifacts {
			if err := rc.JobArtifactUpload(ctx, id, lease, p, bytes.NewReader(b), int64(len(b))); err != nil {
				return fmt.Errorf("upload %s: %w", p, err)
			}
		}
	}
	if _, err := rc.JobSetStatus(ctx, id, lease, final); err != nil {
		return fmt.Errorf("set %s: %w", final.Status, err)
	}
	return nil
}

// waitRun waits for a run to finish, as `dstack logs -f` does.
func waitRun(t *testing.T, c *client.Client, name string) *api.Run {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for {
		run, err := c.RunGet(ctx, name)
		if err != nil {
			t.Fatalf("get run %s: %v", name, err)
		}
		if run.Status.Finished() {
			return run
		}
		if err := clock.Sleep(ctx, 20*time.Millisecond); errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("run %s did not finish: %s", name, run.Status)
		}
	}
}
