package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/client"
	"github.com/dstackai/dstack/server"
	"github.com/dstackai/dstack/store"
	"github.com/dstackai/dstack/store/postgres"
	"github.com/dstackai/dstack/store/sqlite"
	"github.com/dstackai/dstack/version"
)

// host is what each runner offers: any job fits.
var host = api.HostResources{CPUs: 8, MemoryMiB: 32 << 10, DiskMiB: 100 << 10}

// noopSpec is the spec of the i-th job: independent of the others.
func noopSpec(i int) api.JobSpec {
	return api.JobSpec{Workflow: fmt.Sprintf("w%d", i), Provider: "bash", Commands: []string{"true"}}
}

// openStore opens and migrates dstack's store on p.
func openStore(ctx context.Context, p place) (store.Store, error) {
	var (
		s   store.Store
		err error
	)
	if p.DB == "postgres" {
		s, err = postgres.Open(ctx, p.DSN)
	} else {
		s, err = sqlite.Open(ctx, filepath.Join(p.Dir, "dstack.db"))
	}
	if err != nil {
		return nil, err
	}
	if err := s.Migrate(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("migrate: %w", err)
	}
	return s, nil
}

// measureStore submits cfg.Jobs jobs as one run and drains them with
// cfg.Workers concurrent claimers calling the store directly. A call the
// store answers with ErrUnavailable (busy: it waited too long for the write
// lock or a connection) is counted and made again, as a runner retries the
// server's 503.
func measureStore(ctx context.Context, cfg config, p place) (result, error) {
	s, err := openStore(ctx, p)
	if err != nil {
		return result{}, err
	}
	defer s.Close()
	now := time.Now()
	u, err := s.UserCreate(ctx, store.UserCreateParams{ID: "bench", Name: "bench", TokenHash: "bench", Now: now})
	if err != nil {
		return result{}, fmt.Errorf("create user: %w", err)
	}
	runners := make([]*store.Runner, cfg.Workers)
	for i := range runners {
		id := fmt.Sprintf("bench-%d", i)
		runners[i], err = s.RunnerCreate(ctx, store.RunnerCreateParams{
			ID: id, UserID: u.ID, Name: id, Hostname: id, Executor: "shell", Version: "bench",
			Resources: host, TokenHash: "token-" + id, TokenExpiresAt: now.Add(24 * time.Hour), Now: now,
		})
		if err != nil {
			return result{}, fmt.Errorf("create runner: %w", err)
		}
	}
	run := store.RunCreateParams{ID: "bench-run", Name: "bench-run", UserID: u.ID, Workflow: "w0", CodeID: "bench-code", Now: now}
	for i := range cfg.Jobs {
		run.Jobs = append(run.Jobs, store.JobCreate{ID: fmt.Sprintf("bench-job-%d", i), Spec: noopSpec(i)})
	}
	start := time.Now()
	if _, err := s.RunCreate(ctx, run); err != nil {
		return result{}, fmt.Errorf("create run: %w", err)
	}
	submit := time.Since(start)

	start = time.Now()
	var drained, busy atomic.Int64
	errs := make(chan error, len(runners))
	var wg sync.WaitGroup
	for _, r := range runners {
		wg.Go(func() {
			for {
				j, err := s.JobClaimNext(ctx, store.JobClaimNextParams{RunnerID: r.ID, UserID: r.UserID, Free: host, Now: time.Now()})
				if errors.Is(err, store.ErrNotFound) {
					return
				}
				if errors.Is(err, store.ErrUnavailable) && ctx.Err() == nil {
					// The server answers this 503 and runners retry.
					busy.Add(1)
					continue
				}
				if err != nil {
					errs <- fmt.Errorf("claim: %w", err)
					return
				}
				for {
					_, err := s.JobSetStatus(ctx, store.JobSetStatusParams{ID: j.ID, RunnerID: r.ID, Lease: j.Lease, Status: api.StatusDone, Now: time.Now()})
					if errors.Is(err, store.ErrUnavailable) && ctx.Err() == nil {
						busy.Add(1)
						continue
					}
					if err != nil {
						errs <- fmt.Errorf("finish job %s: %w", j.ID, err)
						return
					}
					break
				}
				drained.Add(1)
			}
		})
	}
	wg.Wait()
	drain := time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		return result{}, err
	}
	return result{Jobs: int(drained.Load()), Submit: submit, Drain: drain, Busy: int(busy.Load())}, nil
}

// measureHTTP starts a dstack server on p, submits cfg.Jobs jobs through its
// API and drains them with cfg.Runners runners over HTTP. A busy answer is
// counted and the call made again, as on the store side.
func measureHTTP(ctx context.Context, cfg config, p place) (result, error) {
	sc := server.Config{
		Host:    "127.0.0.1",
		DataDir: p.Dir,
		DB:      p.DSN,
		// The runners do not heartbeat.
		HeartbeatTimeout: time.Hour,
		MinFreeSpace:     -1,
		Logger:           cfg.Logger.With("subsystem", "server"),
	}
	srv, err := server.New(ctx, sc)
	if err != nil {
		return result{}, fmt.Errorf("new server: %w", err)
	}
	if err := srv.Start(ctx); err != nil {
		return result{}, fmt.Errorf("start server: %w", err)
	}
	defer srv.Stop()
	admin, err := client.New(srv.URL(), srv.AdminToken())
	if err != nil {
		return result{}, err
	}
	rcs := make([]*client.Client, cfg.Runners)
	for i := range rcs {
		reg, err := admin.RunnerRegister(ctx, api.RunnerRegisterRequest{Name: fmt.Sprintf("bench-%d", i), Executor: "shell", Version: version.Version, Resources: host})
		if err != nil {
			return result{}, fmt.Errorf("register runner: %w", err)
		}
		rcs[i] = admin.WithToken(reg.Token)
	}
	archive, err := codeArchive()
	if err != nil {
		return result{}, err
	}
	up, err := admin.CodeUpload(ctx, bytes.NewReader(archive))
	if err != nil {
		return result{}, fmt.Errorf("upload code: %w", err)
	}

	start := time.Now()
	for first := 0; first < cfg.Jobs; first += maxRunJobs {
		req := api.RunSubmitRequest{CodeID: up.CodeID, Workflow: "w0"}
		for i := range min(maxRunJobs, cfg.Jobs-first) {
			req.Jobs = append(req.Jobs, noopSpec(i))
		}
		if _, err := admin.RunSubmit(ctx, req); err != nil {
			return result{}, fmt.Errorf("submit: %w", err)
		}
	}
	submit := time.Since(start)

	start = time.Now()
	var drained, busy atomic.Int64
	errs := make(chan error, len(rcs))
	var wg sync.WaitGroup
	for _, rc := range rcs {
		wg.Go(func() {
			for {
				a, err := rc.RunnerClaim(ctx, api.ClaimRequest{Free: host})
				if busyAnswer(err) && ctx.Err() == nil {
					busy.Add(1)
					continue
				}
				if err != nil {
					errs <- fmt.Errorf("claim: %w", err)
					return
				}
				if a == nil {
					return // nothing left
				}
				// Each job's end asks for the next job, as dstack-runner
				// does: a queue drains with one request a job.
				for a != nil {
					var next *api.Assignment
					for {
						res, err := rc.JobSetStatus(ctx, a.Job.ID, a.Lease, api.JobStatusUpdate{Status: api.StatusDone, Next: &api.ClaimRequest{Free: host}})
						if busyAnswer(err) && ctx.Err() == nil {
							busy.Add(1)
							continue
						}
						if err != nil {
							errs <- fmt.Errorf("finish job %s: %w", a.Job.ID, err)
							return
						}
						next = res.Next
						break
					}
					drained.Add(1)
					a = next
				}
			}
		})
	}
	wg.Wait()
	drain := time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		return result{}, err
	}
	return result{Jobs: int(drained.Load()), Submit: submit, Drain: drain, Busy: int(busy.Load())}, nil
}

// busyAnswer reports whether the server answered that its database is busy
// (503, unavailable), which the client gives up on after its own retries:
// the runner asks again, as a real one does.
func busyAnswer(err error) bool {
	var ae *api.Error
	return errors.As(err, &ae) && ae.Code == api.CodeUnavailable
}

// maxRunJobs is the most jobs the server takes in one run.
const maxRunJobs = 1000

// codeArchive is a gzip'd tar with one file, the code the jobs run on.
func codeArchive() ([]byte, error) {
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	const content = "no-op jobs\n"
	if err := tw.WriteHeader(&tar.Header{Name: "README", Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg}); err != nil {
		return nil, err
	}
	if _, err := tw.Write([]byte(content)); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := gz.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
