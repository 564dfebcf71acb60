package main

import (
	"bytes"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"
)

// databases are the databases this machine offers: SQLite always,
// PostgreSQL where DSTACK_TEST_POSTGRES_DSN names one.
func databases(t testing.TB) []string {
	dbs := []string{"sqlite"}
	if os.Getenv("DSTACK_TEST_POSTGRES_DSN") != "" {
		dbs = append(dbs, "postgres")
	} else {
		t.Log("DSTACK_TEST_POSTGRES_DSN is not set: PostgreSQL left out (scripts/postgres.sh starts one and prints it)")
	}
	return dbs
}

func testConfig(t testing.TB) config {
	cfg := defaultConfig()
	cfg.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	cfg.Progress = testWriter{t}
	cfg.Timeout = 2 * time.Minute
	return cfg
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestSideBySide drains a few jobs on every side and database and checks
// that each side drained them all and that the table has a line per run and
// the medians.
func TestSideBySide(t *testing.T) {
	cfg := testConfig(t)
	cfg.Jobs, cfg.Runs, cfg.Workers, cfg.Runners = 50, 2, 4, 4
	cfg.Databases = databases(t)
	var out bytes.Buffer
	if err := run(t.Context(), cfg, &out); err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + out.String())
	for _, db := range cfg.Databases {
		section := out.String()[strings.Index(out.String(), "\n"+db+" "):]
		for _, label := range []string{"1 ", "2 ", "median "} {
			if !strings.Contains(section, "\n"+label) {
				t.Errorf("%s: no line %q in\n%s", db, label, section)
			}
		}
	}
}

func TestConfigValidate(t *testing.T) {
	cfg := defaultConfig()
	cfg.DSN = ""
	cfg.Databases = []string{"postgres", "mysql"}
	cfg.Sides = []string{"river", "queue"}
	err := cfg.validate()
	if err == nil {
		t.Fatal("validate accepted a config without a PostgreSQL URL, with an unknown database and side")
	}
	for _, want := range []string{"DSTACK_TEST_POSTGRES_DSN", `"mysql"`, `"queue"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}

func TestRowRatios(t *testing.T) {
	got := row("1", func(side string) (float64, time.Duration, bool) {
		switch side {
		case sideRiver:
			return 4000, time.Second, true
		case sideStore:
			return 2000, 2 * time.Second, true
		}
		return 0, 0, false
	}, map[string]bool{sideHTTP: true})
	fields := strings.Fields(got)
	want := []string{"1", "4000", "2000", "failed", "0.500", "-", "1.00s", "2.00s", "-"}
	if strings.Join(fields, " ") != strings.Join(want, " ") {
		t.Errorf("row = %q, want the fields %q", got, want)
	}
}

// BenchmarkSideBySide drains 10,000 no-op jobs per iteration on each side
// and database, with the command's defaults, and reports jobs/s.
func BenchmarkSideBySide(b *testing.B) {
	for _, db := range databases(b) {
		for _, side := range []string{sideRiver, sideStore, sideHTTP} {
			b.Run(db+"/"+side, func(b *testing.B) {
				cfg := testConfig(b)
				cfg.DSN = os.Getenv("DSTACK_TEST_POSTGRES_DSN")
				cfg.Timeout = 10 * time.Minute
				var jobs int
				var drain time.Duration
				for b.Loop() {
					r, err := measure(b.Context(), cfg, db, side)
					if err != nil {
						b.Fatal(err)
					}
					jobs += r.Jobs
					drain += r.Drain
				}
				b.ReportMetric(float64(jobs)/drain.Seconds(), "jobs/s")
			})
		}
	}
}
