package server_test

import (
	"context"
	"encoding/base64"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dstackai/dstack/internal/secretbox"
	"github.com/dstackai/dstack/server"
	"github.com/dstackai/dstack/server/servertest"
	"github.com/dstackai/dstack/store/storetest"
)

// A replica that could not serve with the ones running on its database
// refuses to start, and says what to change.

// replicaConfig is the config of a replica on dsn with its own data
// directory, the service address of behindBalancer and, when key is not
// "", that server key.
func replicaConfig(t *testing.T, dsn, key string) server.Config {
	t.Helper()
	return server.Config{
		Host: "127.0.0.1", DataDir: t.TempDir(), DB: dsn, ExternalURL: "http://dstack.example",
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Getenv: func(k string) string {
			if k == secretbox.EnvKey {
				return key
			}
			return ""
		},
	}
}

// keyOf is the server key srv made in its data directory.
func keyOf(t *testing.T, srv *servertest.Server) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(srv.DataDir, secretbox.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// startRefused expects server.New to refuse cfg with an error that says
// each of want.
func startRefused(t *testing.T, cfg server.Config, want ...string) {
	t.Helper()
	srv, err := server.New(context.Background(), cfg)
	if err == nil {
		_ = srv.Stop()
		t.Fatalf("the replica started; want it refused with %q", want)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("refused with %q; want it to say %q", err, w)
		}
	}
}

func TestAReplicaWithAnotherServerKeyIsRefused(t *testing.T) {
	t.Parallel()
	dsn := storetest.PostgresDSN(t)
	first := servertest.Start(t, servertest.WithPostgres(dsn), behindBalancer)
	other := base64.StdEncoding.EncodeToString([]byte(strings.Repeat("k", secretbox.KeySize)))
	cfg := replicaConfig(t, dsn, other)
	cfg.DataDir = first.DataDir // the same storage: only the key differs
	startRefused(t, cfg, "server key", "set "+secretbox.EnvKey+" to the same value on each")
	// With the first replica's key it starts.
	cfg.Getenv = replicaConfig(t, dsn, keyOf(t, first)).Getenv
	srv, err := server.New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("a replica with the same key was refused: %v", err)
	}
	_ = srv.Stop()
}

func TestAReplicaWithOtherLocalStorageIsRefused(t *testing.T) {
	t.Parallel()
	dsn := storetest.PostgresDSN(t)
	first := servertest.Start(t, servertest.WithPostgres(dsn), behindBalancer)
	startRefused(t, replicaConfig(t, dsn, keyOf(t, first)), "keeps code archives and artifacts in the local directory", "--artifacts s3://bucket/prefix")
}

func TestAReplicaWithAnotherExternalURLIsRefused(t *testing.T) {
	t.Parallel()
	dsn := storetest.PostgresDSN(t)
	first := servertest.Start(t, servertest.WithPostgres(dsn)) // no --external-url
	cfg := replicaConfig(t, dsn, keyOf(t, first))
	cfg.DataDir = first.DataDir // the same storage: only the address differs
	startRefused(t, cfg, "its own address (no --external-url)", "same --external-url")
}

func TestAStoppedReplicaLeavesTheWayOpen(t *testing.T) {
	t.Parallel()
	dsn := storetest.PostgresDSN(t)
	first := servertest.Start(t, servertest.WithPostgres(dsn))
	if err := first.Stop(); err != nil {
		t.Fatal(err)
	}
	// Another data directory and key, no --external-url: alone now, it
	// starts (and warns), taking the new key for the database's.
	srv, err := server.New(context.Background(), replicaConfig(t, dsn, ""))
	if err != nil {
		t.Fatalf("a replica alone on the database was refused: %v", err)
	}
	_ = srv.Stop()
}

func TestAReplicaKeepsItsIdentityAcrossRestarts(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, servertest.WithPostgres(storetest.PostgresDSN(t)), behindBalancer)
	id := server.ReplicaID(srv.Server)
	srv.Restart(t)
	if got := server.ReplicaID(srv.Server); got != id {
		t.Fatalf("after a restart the replica is %s, want %s as before", got, id)
	}
	// A second server on the same data directory is another replica.
	if other := server.ReplicaID(srv.StartReplica(t).Server); other == id {
		t.Fatalf("two running servers share the replica identity %s", id)
	}
}

// TestTheSettingsPageGivesRunnersTheServiceAddress: behind a load
// balancer, the `dstack-runner config` line of the settings page names the
// service's address (--external-url), not the replica that served the page
// (a proxy may pass the replica's own address as the Host).
func TestTheSettingsPageGivesRunnersTheServiceAddress(t *testing.T) {
	t.Parallel()
	e := setup(t, servertest.WithConfig(func(c *server.Config) { c.ExternalURL = "http://dstack.example/" }))
	cookie, _ := signIn(t, e.srv.URL, e.srv.AdminToken)
	rp := do(t, e.srv.URL, req{method: http.MethodGet, path: "/settings", header: map[string]string{"Cookie": cookie}})
	if want := " --server http://dstack.example"; !strings.Contains(string(rp.body), want) || strings.Contains(string(rp.body), "--server "+e.srv.URL) {
		t.Errorf("the settings page does not give runners the service address %q:\n%s", want, rp.body)
	}
}
