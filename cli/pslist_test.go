package cli_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/store"
)

// TestPsPagesThroughManyRuns: with more runs than the server answers at
// once (1000), `ps -a` lists every one by paging, `ps` shows the newest 20
// and says that more match, `--limit N` shows N, and `--json` stays one
// JSON array of the runs asked for.
func TestPsPagesThroughManyRuns(t *testing.T) {
	t.Parallel()
	h := setup(t)
	srv := h.serve()
	ctx := context.Background()
	sum := sha256.Sum256([]byte(srv.AdminToken))
	admin, err := srv.Store().UserGetByTokenHash(ctx, hex.EncodeToString(sum[:]))
	if err != nil {
		t.Fatal(err)
	}
	const n = 1234
	start := time.Now().Add(-10 * time.Minute)
	for i := range n {
		id := fmt.Sprintf("run%05d", i)
		// Some runs share a submission time, as runs of a busy server do.
		_, err := srv.Store().RunCreate(ctx, store.RunCreateParams{
			ID: id, Name: "r-" + id, UserID: admin.ID, Workflow: "w", CodeID: "code", Now: start.Add(time.Duration(i/3) * time.Millisecond),
			Jobs: []store.JobCreate{{ID: "j-" + id, Spec: api.JobSpec{Workflow: "w", Provider: "bash", Commands: []string{"true"}}}},
		})
		if err != nil {
			t.Fatalf("RunCreate %d: %v", i, err)
		}
	}
	jsonRuns := func(args ...string) ([]api.Run, result) {
		t.Helper()
		r := h.run(args...)
		if r.code != 0 {
			t.Fatalf("%v: %+v", args, r)
		}
		var runs []api.Run
		if err := json.Unmarshal([]byte(r.stdout), &runs); err != nil {
			t.Fatalf("%v: stdout is not a JSON array of runs: %v", args, err)
		}
		return runs, r
	}
	// Table rows, not the lines below the table on why jobs wait.
	rows := regexp.MustCompile(`(?m)^r-run\d+\s+w\s+pending\s`)
	distinct := func(runs []api.Run) int {
		seen := map[string]bool{}
		for _, r := range runs {
			seen[r.Name] = true
		}
		return len(seen)
	}

	all, r := jsonRuns("ps", "-a", "--json")
	if len(all) != n || distinct(all) != n {
		t.Errorf("ps -a --json: %d runs (%d distinct), want %d", len(all), distinct(all), n)
	}
	if r.stderr != "" {
		t.Errorf("ps -a --json printed on stderr: %q", r.stderr)
	}
	if all[0].Name != "r-run01233" || all[n-1].Name != "r-run00000" {
		t.Errorf("ps -a --json: first %s, last %s; want the newest first", all[0].Name, all[n-1].Name)
	}
	// The unfinished runs are recent runs too: ps --json lists them all.
	if recent, _ := jsonRuns("ps", "--json"); len(recent) != n {
		t.Errorf("ps --json: %d runs, want %d", len(recent), n)
	}

	r = h.run("ps", "-a")
	if got := len(rows.FindAllString(r.stdout, -1)); r.code != 0 || got != n {
		t.Errorf("ps -a: exit %d, %d runs in the table, want %d", r.code, got, n)
	}
	if strings.Contains(r.stderr, "more match") {
		t.Errorf("ps -a says the listing was cut: %q", r.stderr)
	}

	r = h.run("ps")
	if got := len(rows.FindAllString(r.stdout, -1)); r.code != 0 || got != 20 || !strings.Contains(r.stdout, "r-run01233") {
		t.Errorf("ps: exit %d, %d runs, want the newest 20:\n%s", r.code, got, r.stdout)
	}
	if !strings.Contains(r.stderr, "Showing the newest 20 runs, and more match: `dstack ps --limit N` lists more, `dstack ps -a` all of them.") {
		t.Errorf("ps does not say the listing was cut: %q", r.stderr)
	}

	limited, r := jsonRuns("ps", "-a", "--limit", "1001", "--json")
	if len(limited) != 1001 || distinct(limited) != 1001 || !strings.Contains(r.stderr, "Showing the newest 1001 runs") {
		t.Errorf("ps -a --limit 1001 --json: %d runs (%d distinct), stderr %q", len(limited), distinct(limited), r.stderr)
	}
	if exact, r := jsonRuns("ps", "-a", "--limit", fmt.Sprint(n), "--json"); len(exact) != n || strings.Contains(r.stderr, "more match") {
		t.Errorf("ps -a --limit %d --json: %d runs, stderr %q; want all, and no word of more", n, len(exact), r.stderr)
	}
	if r := h.run("ps", "--limit", "0"); r.code == 0 || !strings.Contains(r.stderr, "at least 1") {
		t.Errorf("ps --limit 0: %+v", r)
	}
}
