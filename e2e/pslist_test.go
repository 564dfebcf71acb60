package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/store"
	"github.com/dstackai/dstack/store/postgres"
	"github.com/dstackai/dstack/store/sqlite"
)

// TestPsListsMoreThanAPage: with more runs than the server answers at once
// (1000), `dstack ps -a` lists every one, `dstack ps` the newest 20 and
// says more match, `--limit N` N of them, and `--json` stays one array;
// the web UI's Runs page shows the newest 1000 and says more follow.
// The runs are written straight into the server's database, as fast as it
// takes them.
func TestPsListsMoreThanAPage(t *testing.T) {
	eachDB(t, func(t *testing.T, dsn string) {
		c := newCluster(t, dsn)
		ctx := context.Background()
		var (
			st  store.Store
			err error
		)
		if dsn == "" {
			st, err = sqlite.Open(ctx, filepath.Join(c.dir, "server", "dstack.db"))
		} else {
			st, err = postgres.Open(ctx, dsn)
		}
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		sum := sha256.Sum256([]byte(c.Token))
		admin, err := st.UserGetByTokenHash(ctx, hex.EncodeToString(sum[:]))
		if err != nil {
			t.Fatal(err)
		}
		const n = 1100
		start := time.Now().Add(-30 * time.Minute)
		for i := range n {
			id := fmt.Sprintf("e2e%05d", i)
			_, err := st.RunCreate(ctx, store.RunCreateParams{
				ID: id, Name: "r-" + id, UserID: admin.ID, Workflow: "w", CodeID: "code", Now: start.Add(time.Duration(i/2) * time.Millisecond),
				Jobs: []store.JobCreate{{ID: "j-" + id, Spec: api.JobSpec{Workflow: "w", Provider: "bash", Commands: []string{"true"}}}},
			})
			if err != nil {
				t.Fatalf("RunCreate %d: %v", i, err)
			}
		}

		if runs := c.runs(); len(runs) != n || runs[0].Name != "r-e2e01099" || runs[n-1].Name != "r-e2e00000" {
			t.Errorf("ps -a --json: %d runs, want %d, newest first", len(runs), n)
		}
		rows := regexp.MustCompile(`(?m)^r-e2e\d+\s+w\s+pending\s`) // table rows, not the reasons below
		r := c.dstack("", "ps", "-a")
		if got := len(rows.FindAllString(r.stdout, -1)); r.code != 0 || got != n || strings.Contains(r.stderr, "more match") {
			t.Errorf("ps -a: exit %d, %d runs, stderr %q; want all %d", r.code, got, r.stderr, n)
		}
		r = c.dstack("", "ps")
		if got := len(rows.FindAllString(r.stdout, -1)); r.code != 0 || got != 20 || !strings.Contains(r.stderr, "Showing the newest 20 runs, and more match") {
			t.Errorf("ps: exit %d, %d runs, stderr %q; want 20 and a word that more match", r.code, got, r.stderr)
		}
		r = c.dstack("", "ps", "-a", "--limit", "1050", "--json")
		var runs []api.Run
		if err := json.Unmarshal([]byte(r.stdout), &runs); err != nil || len(runs) != 1050 || !strings.Contains(r.stderr, "Showing the newest 1050 runs") {
			t.Errorf("ps -a --limit 1050 --json: %d runs, %v, stderr %q", len(runs), err, r.stderr)
		}
		if dsn != "" {
			return // the web UI reads the same API: once is enough
		}
		// The web UI's Runs page shows the first page, and says so.
		b := newBrowser(t, c.URL)
		b.signIn(c.Token)
		b.wait("the newest runs and the note that more follow",
			`document.querySelectorAll("#runs tbody tr").length === 1000 && !document.querySelector("#runs-cut").hidden`)
		if got := b.text("#runs-cut"); !strings.Contains(got, "newest 1000 runs") {
			t.Errorf("the Runs page's note = %q", got)
		}
	})
}
