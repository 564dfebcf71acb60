package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

const (
	sideRiver = "river"
	sideStore = "store"
	sideHTTP  = "http"
)

// result is what one side measured in one run.
type result struct {
	Jobs   int           // jobs drained
	Submit time.Duration // inserting or submitting them
	Drain  time.Duration // claiming and completing them
	// Busy counts dstack's calls answered busy (the store's
	// ErrUnavailable, the server's 503) and made again.
	Busy int
}

// Rate is the jobs drained per second.
func (r result) Rate() float64 {
	if r.Drain <= 0 {
		return 0
	}
	return float64(r.Jobs) / r.Drain.Seconds()
}

// place is where one side of one run keeps its data: a schema of its own on
// PostgreSQL, a directory of its own for SQLite.
type place struct {
	DB  string // "postgres" or "sqlite"
	DSN string // PostgreSQL: the base URL with search_path set to Schema
	// Schema is the PostgreSQL schema, empty for SQLite.
	Schema string
	// Dir is an empty directory, for SQLite's files and the server's data.
	Dir string
}

// newPlace makes a fresh place for a side; drop removes it.
func newPlace(ctx context.Context, cfg config, db, side string) (p place, drop func(), err error) {
	dir, err := os.MkdirTemp("", "dstack-bench-"+side+"-")
	if err != nil {
		return place{}, nil, fmt.Errorf("make a temporary directory: %w", err)
	}
	p = place{DB: db, Dir: dir}
	dropDir := func() { _ = os.RemoveAll(dir) }
	if db != "postgres" {
		return p, dropDir, nil
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	p.Schema = "bench_" + side + "_" + hex.EncodeToString(b[:])
	if err := pgExec(ctx, cfg.DSN, "CREATE SCHEMA "+p.Schema); err != nil {
		dropDir()
		return place{}, nil, fmt.Errorf("create schema %s: %w", p.Schema, err)
	}
	u, err := url.Parse(cfg.DSN)
	if err != nil {
		dropDir()
		return place{}, nil, fmt.Errorf("PostgreSQL URL: %w (expected postgres://user@host:port/db?sslmode=disable)", err)
	}
	q := u.Query()
	q.Set("search_path", p.Schema)
	u.RawQuery = q.Encode()
	p.DSN = u.String()
	return p, func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := pgExec(ctx, cfg.DSN, "DROP SCHEMA IF EXISTS "+p.Schema+" CASCADE"); err != nil {
			cfg.Logger.Warn("drop schema", "schema", p.Schema, "err", err)
		}
		dropDir()
	}, nil
}

// pgExec runs one statement on a connection of its own; pool settings in
// dsn (pool_max_conns) are left to the pools.
func pgExec(ctx context.Context, dsn, stmt string) error {
	pc, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return fmt.Errorf("PostgreSQL URL: %w", err)
	}
	conn, err := pgx.ConnectConfig(ctx, pc.ConnConfig)
	if err != nil {
		return fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, stmt)
	return err
}

// measure runs one side once on a fresh place.
func measure(ctx context.Context, cfg config, db, side string) (result, error) {
	p, drop, err := newPlace(ctx, cfg, db, side)
	if err != nil {
		return result{}, err
	}
	defer drop()
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	var r result
	switch side {
	case sideRiver:
		r, err = measureRiver(ctx, cfg, p)
	case sideStore:
		r, err = measureStore(ctx, cfg, p)
	case sideHTTP:
		r, err = measureHTTP(ctx, cfg, p)
	default:
		err = fmt.Errorf("unknown side %q", side)
	}
	if err != nil {
		return result{}, fmt.Errorf("%s on %s: %w", side, db, err)
	}
	if r.Jobs != cfg.Jobs {
		return result{}, fmt.Errorf("%s on %s drained %d jobs, want %d", side, db, r.Jobs, cfg.Jobs)
	}
	return r, nil
}

// run measures every side on every database cfg.Runs times and prints each
// run as it ends, then the medians, to w.
func run(ctx context.Context, cfg config, w io.Writer) error {
	if err := cfg.validate(); err != nil {
		return err
	}
	fmt.Fprintf(w, "dstack and River side by side: %d no-op jobs a side, %d runs\n", cfg.Jobs, cfg.Runs)
	fmt.Fprintf(w, "River: MaxWorkers %d, FetchCooldown %s, FetchPollInterval %s; store: %d workers; HTTP: %d runners\n",
		cfg.riverMaxWorkers(), cfg.FetchCooldown, cfg.FetchPollInterval, cfg.Workers, cfg.Runners)
	var failures []string
	for _, db := range cfg.Databases {
		fmt.Fprintf(w, "\n%s (load average before: %s)\n", db, loadAverage())
		fmt.Fprintf(w, rowFormat, "run", "River/s", "store/s", "HTTP/s", "store/River", "HTTP/River", "River ins", "store sub", "HTTP sub")
		all := map[string][]result{}
		for i := range cfg.Runs {
			got := map[string]result{}
			failed := map[string]bool{}
			for _, side := range cfg.Sides {
				r, err := measure(ctx, cfg, db, side)
				if err != nil {
					if ctx.Err() != nil {
						return err
					}
					// One side failing (a timeout, a busy database) is a
					// finding: the others are still measured.
					fmt.Fprintf(cfg.Progress, "%s run %d: %s failed: %v\n", db, i+1, side, err)
					failed[side] = true
					failures = append(failures, fmt.Sprintf("%s on %s in run %d", side, db, i+1))
					continue
				}
				fmt.Fprintf(cfg.Progress, "%s run %d: %s drained %d jobs in %.2fs (%.0f/s) after %.2fs of submission; %d calls retried as busy\n",
					db, i+1, side, r.Jobs, r.Drain.Seconds(), r.Rate(), r.Submit.Seconds(), r.Busy)
				got[side] = r
				all[side] = append(all[side], r)
			}
			fmt.Fprint(w, row(fmt.Sprint(i+1), func(side string) (float64, time.Duration, bool) {
				r, ok := got[side]
				return r.Rate(), r.Submit, ok
			}, failed))
		}
		fmt.Fprint(w, row("median", func(side string) (float64, time.Duration, bool) {
			rs, ok := all[side]
			if !ok {
				return 0, 0, false
			}
			rates := make([]float64, len(rs))
			submits := make([]time.Duration, len(rs))
			for i, r := range rs {
				rates[i], submits[i] = r.Rate(), r.Submit
			}
			return median(rates), median(submits), true
		}, nil))
		fmt.Fprintf(w, "load average after: %s\n", loadAverage())
	}
	if len(failures) > 0 {
		return fmt.Errorf("%s failed: see above", strings.Join(failures, ", "))
	}
	return nil
}

// rowFormat lays out a line of the table: the run, the three rates (jobs
// drained per second), the two ratios to River, the three submission times.
const rowFormat = "%-7s %9s %9s %9s %12s %11s %10s %10s %10s\n"

// row formats one line of the table; get says what a side measured, failed
// which sides failed.
func row(label string, get func(side string) (rate float64, submit time.Duration, ok bool), failed map[string]bool) string {
	sides := []string{sideRiver, sideStore, sideHTTP}
	rates := map[string]float64{}
	rateCells, submitCells := make([]any, 3), make([]any, 3)
	for i, s := range sides {
		rateCells[i], submitCells[i] = "-", "-"
		if failed[s] {
			rateCells[i] = "failed"
		}
		if rate, submit, ok := get(s); ok {
			rates[s] = rate
			rateCells[i] = fmt.Sprintf("%.0f", rate)
			submitCells[i] = fmt.Sprintf("%.2fs", submit.Seconds())
		}
	}
	ratioCells := []any{"-", "-"}
	for i, s := range []string{sideStore, sideHTTP} {
		r, ok1 := rates[s]
		river, ok2 := rates[sideRiver]
		if ok1 && ok2 && river > 0 {
			ratioCells[i] = fmt.Sprintf("%.3f", r/river)
		}
	}
	args := append([]any{label}, rateCells...)
	args = append(args, ratioCells...)
	args = append(args, submitCells...)
	return fmt.Sprintf(rowFormat, args...)
}

func median[T float64 | time.Duration](xs []T) T {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n == 0 {
		return 0
	}
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// loadAverage is the machine's load average over 1, 5 and 15 minutes, as
// uptime prints it, or "unknown" where /proc/loadavg is missing.
func loadAverage() string {
	b, err := os.ReadFile(filepath.Join("/proc", "loadavg"))
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], ", ")
}
