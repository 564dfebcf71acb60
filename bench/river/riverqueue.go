package main

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/riverdriver/riversqlite"
	"github.com/riverqueue/river/rivermigrate"
	_ "modernc.org/sqlite" // the pure-Go driver dstack's SQLite store uses
)

// noopArgs is the job River runs: nothing.
type noopArgs struct{}

func (noopArgs) Kind() string { return "noop" }

type noopWorker struct {
	river.WorkerDefaults[noopArgs]
}

func (noopWorker) Work(context.Context, *river.Job[noopArgs]) error { return nil }

// measureRiver inserts cfg.Jobs jobs and drains them with a River client.
func measureRiver(ctx context.Context, cfg config, p place) (result, error) {
	switch p.DB {
	case "postgres":
		pool, err := pgxpool.New(ctx, p.DSN)
		if err != nil {
			return result{}, fmt.Errorf("connect to PostgreSQL: %w", err)
		}
		defer pool.Close()
		return drainRiver(ctx, cfg, riverpgxv5.New(pool), p.Schema)
	default:
		db, err := openRiverSQLite(ctx, filepath.Join(p.Dir, "river.db"))
		if err != nil {
			return result{}, err
		}
		defer db.Close()
		return drainRiver(ctx, cfg, riversqlite.New(db), "")
	}
}

// openRiverSQLite opens a SQLite file for River through modernc.org/sqlite
// with the settings of dstack's store (WAL, synchronous=NORMAL, immediate
// transactions) and one connection, as riversqlite recommends.
func openRiverSQLite(ctx context.Context, path string) (*sql.DB, error) {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(5000)")
	q.Add("_pragma", "synchronous(NORMAL)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	return db, nil
}

func drainRiver[TTx any](ctx context.Context, cfg config, driver riverdriver.Driver[TTx], schema string) (result, error) {
	migrator, err := rivermigrate.New(driver, &rivermigrate.Config{Schema: schema, Logger: cfg.Logger})
	if err != nil {
		return result{}, fmt.Errorf("river migrator: %w", err)
	}
	if _, err := migrator.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return result{}, fmt.Errorf("river migrate: %w", err)
	}
	workers := river.NewWorkers()
	if err := river.AddWorkerSafely(workers, &noopWorker{}); err != nil {
		return result{}, err
	}
	client, err := river.NewClient(driver, &river.Config{
		Schema:            schema,
		Logger:            cfg.Logger,
		Workers:           workers,
		Queues:            map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: cfg.riverMaxWorkers()}},
		FetchCooldown:     cfg.FetchCooldown,
		FetchPollInterval: cfg.FetchPollInterval,
	})
	if err != nil {
		return result{}, fmt.Errorf("river client: %w", err)
	}

	params := make([]river.InsertManyParams, cfg.Jobs)
	for i := range params {
		params[i] = river.InsertManyParams{Args: noopArgs{}}
	}
	start := time.Now()
	if _, err := client.InsertMany(ctx, params); err != nil {
		return result{}, fmt.Errorf("river insert: %w", err)
	}
	submit := time.Since(start)

	// A channel as large as the run, so that River drops no event.
	events, unsubscribe := client.SubscribeConfig(&river.SubscribeConfig{
		ChanSize: cfg.Jobs + 1,
		Kinds:    []river.EventKind{river.EventKindJobCompleted, river.EventKindJobFailed},
	})
	defer unsubscribe()
	start = time.Now()
	if err := client.Start(ctx); err != nil {
		return result{}, fmt.Errorf("river start: %w", err)
	}
	defer func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = client.Stop(stopCtx)
	}()
	done := 0
	for done < cfg.Jobs {
		select {
		case ev := <-events:
			if ev.Kind != river.EventKindJobCompleted {
				return result{}, fmt.Errorf("river job %d: %s", ev.Job.ID, ev.Kind)
			}
			done++
		case <-ctx.Done():
			return result{}, fmt.Errorf("river completed %d of %d jobs: %w", done, cfg.Jobs, ctx.Err())
		}
	}
	return result{Jobs: done, Submit: submit, Drain: time.Since(start)}, nil
}
