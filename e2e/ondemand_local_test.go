package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/docker/docker/client"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/backend"
	"github.com/dstackai/dstack/backend/local"
	dclient "github.com/dstackai/dstack/client"
	"github.com/dstackai/dstack/server"
	"github.com/dstackai/dstack/store"
)

// TestOnDemandLocalBackend runs the whole on-demand loop on the real Docker
// engine: a limit of the local backend, a job submitted, a container
// instance launched, its runner joining and running the job to done, and
// the instance torn down after a short idle timeout. It skips without a
// Docker engine, and fails then under CI.
func TestOnDemandLocalBackend(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test: skipped with -short")
	}
	t.Parallel()
	ctx := context.Background()
	docker, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err == nil {
		pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		_, err = docker.Ping(pctx)
		cancel()
	}
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("no Docker engine under CI: %v", err)
		}
		t.Skipf("no Docker engine: %v", err)
	}
	defer docker.Close()

	dir := t.TempDir()
	runnerBin := filepath.Join(dir, "dstack-runner")
	build := exec.Command("go", "build", "-o", runnerBin, "github.com/dstackai/dstack/cmd/dstack-runner")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build a static dstack-runner: %v\n%s", err, out)
	}
	ref, err := local.BuildImage(ctx, docker, runnerBin)
	if err != nil {
		t.Fatalf("build the runner image: %v", err)
	}
	lb, err := local.New(docker, local.Config{Image: ref, StopTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(testLog{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	srv, err := server.New(ctx, server.Config{
		Host: "0.0.0.0", Port: 0, DataDir: filepath.Join(dir, "server"), Logger: logger,
		Backends: []backend.Backend{lb}, IdleTimeout: 3 * time.Second, HeartbeatTimeout: 10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()

	st := srv.Store()
	sum := sha256.Sum256([]byte(srv.AdminToken()))
	admin, err := st.UserGetByTokenHash(ctx, hex.EncodeToString(sum[:]))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.LimitPut(ctx, store.LimitPutParams{ID: "e2e-local", UserID: admin.ID, Backend: local.Name, Region: local.Region,
		InstanceType: "local.small", Max: 1, Now: time.Now()}); err != nil {
		t.Fatal(err)
	}
	c, err := dclient.New(srv.URL(), srv.AdminToken())
	if err != nil {
		t.Fatal(err)
	}
	up, err := c.CodeUpload(ctx, bytes.NewReader(tarGz(t, map[string]string{"hello.txt": "hi\n"})))
	if err != nil {
		t.Fatal(err)
	}
	run, err := c.RunSubmit(ctx, api.RunSubmitRequest{CodeID: up.CodeID, Workflow: "hello", Jobs: []api.JobSpec{{
		Workflow: "hello", Provider: "bash", Commands: []string{"cat hello.txt"}, Resources: api.Resources{CPU: 1, MemoryMiB: 256},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 2*time.Minute, "the job to be done on an on-demand container", func() bool {
		r, err := c.RunGet(ctx, run.Name)
		if err != nil {
			return false
		}
		if r.Jobs[0].Status.Finished() && r.Jobs[0].Status != api.StatusDone {
			t.Fatalf("job ended %s: %s", r.Jobs[0].Status, r.Jobs[0].StatusReason)
		}
		return r.Jobs[0].Status == api.StatusDone
	})
	waitUntil(t, time.Minute, "the idle instance's teardown", func() bool {
		ins, err := st.InstanceList(ctx, store.InstanceListParams{})
		if err != nil || len(ins) != 1 || ins[0].State != store.InstanceTerminated {
			return false
		}
		live, err := lb.List(ctx, mustServerID(t, st))
		return err == nil && len(live) == 0
	})
}

func mustServerID(t *testing.T, st store.Store) string {
	t.Helper()
	id, err := st.SettingInit(context.Background(), store.SettingInitParams{Name: store.SettingServerID, Value: "unused"})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

type testLog struct{ t *testing.T }

func (w testLog) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

func tarGz(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for name, content := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(content)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
