// Command river measures dstack's job queue side by side with River
// (github.com/riverqueue/river), a job queue for Go on PostgreSQL and SQLite,
// on the same database in the same run.
//
// Each run drains the same number of no-op jobs three ways, each on a fresh
// schema (PostgreSQL) or a fresh file (SQLite):
//
//   - River: the jobs inserted with one InsertMany, then a client with a no-op
//     worker started; timed from Start until River reports every job
//     completed (its completer has written them).
//   - dstack's store: the jobs submitted as one run of independent jobs
//     (store.RunCreate), then Workers goroutines, each with a runner of its
//     own, calling JobClaimNext and JobSetStatus(done) until nothing is left.
//   - dstack over HTTP: an in-process server with Runners runners claiming and
//     finishing jobs through package client, as real runners do (without
//     heartbeats or logs); the jobs are submitted in runs of 1,000, the most a
//     run may hold.
//
// Submission is timed apart from the drain; the rates are jobs drained per
// second. The ratios are dstack's rate over River's in the same run.
//
//	go run ./river -runs 3 -dsn postgres://postgres@127.0.0.1:55432/dstack_test?sslmode=disable
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"time"
)

func main() {
	cfg := defaultConfig()
	fs := flag.NewFlagSet("river", flag.ExitOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: river [flags]\n\nDrains no-op jobs through River and through dstack's store and server on the same\ndatabase and prints the rates and their ratios.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	fs.IntVar(&cfg.Jobs, "n", cfg.Jobs, "jobs per run and side")
	fs.IntVar(&cfg.Runs, "runs", cfg.Runs, "runs per database; each is printed, then the median")
	dbs := fs.String("db", strings.Join(cfg.Databases, ","), "databases, comma-separated: postgres, sqlite")
	sides := fs.String("sides", strings.Join(cfg.Sides, ","), "what to measure, comma-separated: river, store, http")
	fs.StringVar(&cfg.DSN, "dsn", cfg.DSN, "PostgreSQL URL; each side gets a schema of its own there, dropped after the run (default $DSTACK_TEST_POSTGRES_DSN)")
	fs.IntVar(&cfg.Workers, "workers", cfg.Workers, "concurrent claimers of dstack's store")
	fs.IntVar(&cfg.RiverMaxWorkers, "river-max-workers", cfg.RiverMaxWorkers, "River's MaxWorkers for its queue (0: as -workers)")
	fs.IntVar(&cfg.Runners, "runners", cfg.Runners, "runners claiming over HTTP")
	fs.DurationVar(&cfg.FetchCooldown, "river-fetch-cooldown", cfg.FetchCooldown, "River's FetchCooldown: the least time between two fetches of jobs")
	fs.DurationVar(&cfg.FetchPollInterval, "river-fetch-poll-interval", cfg.FetchPollInterval, "River's FetchPollInterval: the most time between two fetches")
	fs.DurationVar(&cfg.Timeout, "timeout", cfg.Timeout, "give up on a side whose drain takes longer")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole run (every side) to this file")
	verbose := fs.Bool("v", false, "log River's and the server's INFO records to stderr (WARN and above otherwise)")
	_ = fs.Parse(os.Args[1:])
	cfg.Databases = splitList(*dbs)
	cfg.Sides = splitList(*sides)
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	cfg.Progress = os.Stderr

	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "river: cpu profile:", err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, cfg, os.Stdout); err != nil {
		pprof.StopCPUProfile()
		fmt.Fprintln(os.Stderr, "river:", err)
		os.Exit(1)
	}
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// config is what a benchmark run needs.
type config struct {
	Jobs      int
	Runs      int
	Databases []string // "postgres", "sqlite"
	Sides     []string // "river", "store", "http"
	DSN       string   // PostgreSQL
	Workers   int      // store claimers
	Runners   int      // HTTP runners
	// River's settings (river.QueueConfig's and river.Config's fields of
	// the same names); RiverMaxWorkers 0 is Workers.
	RiverMaxWorkers   int
	FetchCooldown     time.Duration
	FetchPollInterval time.Duration
	Timeout           time.Duration
	Logger            *slog.Logger
	// Progress receives a line as each side of each run ends, and why a
	// side failed.
	Progress io.Writer
}

func defaultConfig() config {
	return config{
		Jobs:      10_000,
		Runs:      3,
		Databases: []string{"postgres", "sqlite"},
		Sides:     []string{sideRiver, sideStore, sideHTTP},
		DSN:       os.Getenv("DSTACK_TEST_POSTGRES_DSN"),
		Workers:   200,
		Runners:   200,
		// River fetches at most MaxWorkers jobs at a time and waits
		// FetchCooldown between fetches: its default (100 ms) would cap it
		// at 2,000 jobs/s with 200 workers. 10 ms raises the cap to 20,000/s,
		// so that the database sets the pace, without fetching in small
		// bites. The poll interval is River's default: the producer fetches
		// again as soon as a worker is free, the poll only matters when idle.
		FetchCooldown:     10 * time.Millisecond,
		FetchPollInterval: time.Second,
		Timeout:           10 * time.Minute,
		Logger:            slog.New(slog.NewTextHandler(io.Discard, nil)),
		Progress:          io.Discard,
	}
}

// riverMaxWorkers is River's MaxWorkers.
func (c config) riverMaxWorkers() int {
	if c.RiverMaxWorkers > 0 {
		return c.RiverMaxWorkers
	}
	return c.Workers
}

func (c config) validate() error {
	var errs []error
	if c.Jobs < 1 {
		errs = append(errs, fmt.Errorf("-n %d: need at least one job", c.Jobs))
	}
	if c.Runs < 1 {
		errs = append(errs, fmt.Errorf("-runs %d: need at least one run", c.Runs))
	}
	if c.Workers < 1 || c.Runners < 1 || c.RiverMaxWorkers < 0 {
		errs = append(errs, fmt.Errorf("-workers %d, -runners %d, -river-max-workers %d: need at least one worker and one runner", c.Workers, c.Runners, c.RiverMaxWorkers))
	}
	if len(c.Databases) == 0 {
		errs = append(errs, errors.New("-db is empty: name postgres, sqlite or both"))
	}
	for _, db := range c.Databases {
		switch db {
		case "sqlite":
		case "postgres":
			if c.DSN == "" {
				errs = append(errs, errors.New("no PostgreSQL to measure on: pass -dsn postgres://… or set DSTACK_TEST_POSTGRES_DSN (scripts/postgres.sh starts one and prints it), or leave it out with -db sqlite"))
			}
		default:
			errs = append(errs, fmt.Errorf("-db: unknown database %q: use postgres or sqlite", db))
		}
	}
	if len(c.Sides) == 0 {
		errs = append(errs, errors.New("-sides is empty: name river, store, http or several"))
	}
	for _, s := range c.Sides {
		if s != sideRiver && s != sideStore && s != sideHTTP {
			errs = append(errs, fmt.Errorf("-sides: unknown side %q: use river, store or http", s))
		}
	}
	if c.FetchCooldown < time.Millisecond || c.FetchPollInterval < c.FetchCooldown {
		errs = append(errs, fmt.Errorf("-river-fetch-cooldown %s, -river-fetch-poll-interval %s: River needs a cooldown of at least 1ms and a poll interval no shorter than the cooldown", c.FetchCooldown, c.FetchPollInterval))
	}
	return errors.Join(errs...)
}
