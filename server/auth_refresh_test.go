package server

import (
	"context"
	"fmt"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/store"
	"github.com/dstackai/dstack/store/sqlite"
)

// readCounting counts the reads of runners by credential of the store it
// wraps.
type readCounting struct {
	store.Store
	one, many atomic.Int64
}

func (c *readCounting) RunnerGetByTokenHash(ctx context.Context, h string) (*store.Runner, error) {
	c.one.Add(1)
	return c.Store.RunnerGetByTokenHash(ctx, h)
}

func (c *readCounting) RunnersByTokenHash(ctx context.Context, hs []string) (map[string]*store.Runner, error) {
	c.many.Add(1)
	return c.Store.RunnersByTokenHash(ctx, hs)
}

// TestRunnerCredentialsAreRefreshedTogether: cached runner credentials due
// to be read again are read many in one query, not one query each (with
// 10,000 runners that was 500 reads a second); a runner removed meanwhile is
// refused once its credential was read again, and one whose credential
// was refreshed goes on without a read of its own.
func TestRunnerCredentialsAreRefreshedTogether(t *testing.T) {
	ctx := t.Context()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "dstack.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	var (
		mu  sync.Mutex
		now = time.Now()
	)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }

	u, err := st.UserCreate(ctx, store.UserCreateParams{ID: "u", Name: "u", TokenHash: "u", Now: now})
	if err != nil {
		t.Fatal(err)
	}
	const runners = 1200
	tokens := make([]string, runners)
	for i := range tokens {
		tokens[i] = fmt.Sprintf("%stoken-%d", runnerTokenPrefix, i)
		if _, err := st.RunnerCreate(ctx, store.RunnerCreateParams{ID: fmt.Sprint("r", i), UserID: u.ID, Name: fmt.Sprint("r", i),
			Hostname: "h", Executor: "shell", Resources: api.HostResources{CPUs: 1}, TokenHash: hashToken(tokens[i]),
			TokenExpiresAt: now.Add(24 * time.Hour), Now: now}); err != nil {
			t.Fatal(err)
		}
	}
	reads := &readCounting{Store: st}
	a := newAuthenticator(reads, clock)
	call := func(tok string) error {
		r := httptest.NewRequest("POST", "/api/v1/runner/heartbeat", nil)
		r.Header.Set("Authorization", "Bearer "+tok)
		_, err := a.runner(r)
		return err
	}
	for _, tok := range tokens {
		if err := call(tok); err != nil {
			t.Fatal(err)
		}
	}
	if got := reads.one.Load(); got != runners {
		t.Fatalf("first calls read %d credentials one by one, want %d", got, runners)
	}

	// Past 2/3 of the ttl each call has its credential read again in the
	// background; runner r0 was removed meanwhile.
	if _, err := st.RunnerMarkOffline(ctx, store.RunnerMarkOfflineParams{RunnerID: "r0", Now: now}); err != nil {
		t.Fatal(err)
	}
	if err := st.RunnerDelete(ctx, store.RunnerDeleteParams{ID: "r0"}); err != nil {
		t.Fatal(err)
	}
	advance(a.ttl*2/3 + time.Second)
	for _, tok := range tokens {
		if err := call(tok); err != nil {
			t.Fatalf("a call while its credential is read again: %v", err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		a.mu.Lock()
		left := len(a.refreshing)
		a.mu.Unlock()
		if left == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d credentials still being read again after 10s", left)
		}
		time.Sleep(20 * time.Millisecond)
	}
	want := int64((runners + refreshBatch - 1) / refreshBatch)
	if got := reads.many.Load(); got < want || got > want+2 {
		t.Errorf("refreshing %d credentials took %d reads, want %d to %d", runners, got, want, want+2)
	}
	if got := reads.one.Load(); got != runners {
		t.Errorf("refreshing read %d credentials one by one", got-runners)
	}

	// Past the ttl from the first read, the refreshed credentials hold
	// without a read; the removed runner's is refused.
	advance(a.ttl/3 + time.Second)
	for _, tok := range tokens[1:] {
		if err := call(tok); err != nil {
			t.Fatalf("a refreshed credential: %v", err)
		}
	}
	if got := reads.one.Load(); got != runners {
		t.Errorf("refreshed credentials were read again one by one %d times", got-runners)
	}
	if err := call(tokens[0]); err == nil {
		t.Error("the credential of a removed runner was still taken after it was read again")
	}
}

// TestForgetRunnerDropsOnlyItsCredentials: forgetting a runner drops each
// credential cached for it, and no other runner's.
func TestForgetRunnerDropsOnlyItsCredentials(t *testing.T) {
	a := newAuthenticator(nil, time.Now)
	now := time.Now()
	a.put("old", cachedRunner{r: &store.Runner{ID: "r1"}, fetched: now})
	a.put("new", cachedRunner{r: &store.Runner{ID: "r1"}, fetched: now})
	a.put("other", cachedRunner{r: &store.Runner{ID: "r2"}, fetched: now})
	a.put("other", cachedRunner{r: &store.Runner{ID: "r2"}, fetched: now}) // read again
	a.forgetRunner("r1")
	if _, ok := a.runners["old"]; ok {
		t.Error("r1's first credential is still cached")
	}
	if _, ok := a.runners["new"]; ok {
		t.Error("r1's second credential is still cached")
	}
	if _, ok := a.runners["other"]; !ok {
		t.Error("r2's credential was dropped with r1's")
	}
	a.forgetRunner("r2")
	if len(a.runners) != 0 || len(a.hashes) != 0 {
		t.Errorf("after forgetting both: %d credentials, %d runners left", len(a.runners), len(a.hashes))
	}
}

// BenchmarkForgetRunner: with 10,000 runners cached, forgetting one (it
// went offline, came back, was removed) costs the same as with one.
func BenchmarkForgetRunner(b *testing.B) {
	a := newAuthenticator(nil, time.Now)
	now := time.Now()
	const runners = 10_000
	for i := range runners {
		id := fmt.Sprintf("r%d", i)
		a.put("h"+id, cachedRunner{r: &store.Runner{ID: id}, fetched: now})
	}
	i := 0
	for b.Loop() {
		id := fmt.Sprintf("r%d", i%runners)
		a.forgetRunner(id)
		a.put("h"+id, cachedRunner{r: &store.Runner{ID: id}, fetched: now})
		i++
	}
}
