// Package executortest gives tests a real Docker Engine and an image to run
// without a registry: Image is FROM scratch with a static busybox, built
// through the engine's API from a context made in memory.
//
// RequireDocker skips a test when no engine answers, unless the CI
// environment variable is set: under CI a missing engine fails the test.
// scripts/test-images.sh builds the same image from the command line, and
// installs Debian's busybox-static when no static busybox is found; the
// builder here calls it for that when it has to.
package executortest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/dstackai/dstack/internal/scratch"
)

// Image has a static busybox as /bin/busybox, its applets linked next to
// it (/bin/sh among them), and a /tmp; no bash.
const Image = "dstack-test/busybox:latest"

var built struct {
	sync.Once
	err error
}

// RequireDocker returns a client of the Docker Engine (closed when the test
// ends) once Image is there. It skips the test when no engine answers, or
// fails it when CI is set.
func RequireDocker(t testing.TB) *client.Client {
	t.Helper()
	cli, err := client.New(client.FromEnv)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err = cli.Ping(ctx, client.PingOptions{})
		cancel()
		if err != nil {
			_ = cli.Close()
		}
	}
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI is set and no Docker Engine answers: %v", err)
		}
		t.Skipf("no Docker Engine: %v", err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	built.Do(func() { built.err = BuildImage(context.Background(), cli) })
	if built.err != nil {
		t.Fatalf("build %s: %v", Image, built.err)
	}
	return cli
}

// BuildImage builds Image. Without a static busybox on this machine it runs
// scripts/test-images.sh --install-only first.
func BuildImage(ctx context.Context, cli *client.Client) error {
	bb, err := Busybox(ctx)
	if err != nil {
		return err
	}
	entries, err := scratch.BusyboxEntries(bb, "rootfs/bin")
	if err != nil {
		return err
	}
	entries = append([]scratch.Entry{
		{Name: "Dockerfile", Mode: 0o644, Data: []byte("FROM scratch\nCOPY rootfs /\nLABEL ai.dstack.test=busybox\n")},
		{Name: "rootfs/", Mode: 0o755, Dir: true},
		{Name: "rootfs/tmp/", Mode: 0o1777, Dir: true},
	}, entries...)
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	return scratch.Build(ctx, cli, entries, client.ImageBuildOptions{Tags: []string{Image}})
}

// Busybox returns the path of a static busybox, installing Debian's
// busybox-static with scripts/test-images.sh --install-only when there is
// none.
func Busybox(ctx context.Context) (string, error) {
	if bb := scratch.FindBusybox(); bb != "" {
		return bb, nil
	}
	script, err := findScript()
	if err != nil {
		return "", err
	}
	out, err := exec.CommandContext(ctx, script, "--install-only").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("no static busybox, and %s could not install one: %w\n%s", script, err, out)
	}
	if bb := scratch.FindBusybox(); bb != "" {
		return bb, nil
	}
	return "", errors.New("no static busybox after " + script)
}

// findScript finds scripts/test-images.sh above the working directory (a
// test runs in its package's directory).
func findScript() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		p := filepath.Join(dir, "scripts", "test-images.sh")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no static busybox, and no scripts/test-images.sh to install one: install busybox-static")
		}
		dir = parent
	}
}
