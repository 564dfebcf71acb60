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
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/client"
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
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err = cli.Ping(ctx)
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
	bb, ok := staticBusybox()
	if !ok {
		script, err := findScript()
		if err != nil {
			return err
		}
		out, err := exec.CommandContext(ctx, script, "--install-only").CombinedOutput()
		if err != nil {
			return fmt.Errorf("no static busybox, and %s could not install one: %v\n%s", script, err, out)
		}
		if bb, ok = staticBusybox(); !ok {
			return errors.New("no static busybox after " + script)
		}
	}
	buildCtx, err := contextTar(bb)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	resp, err := cli.ImageBuild(ctx, buildCtx, build.ImageBuildOptions{
		Tags: []string{Image}, Remove: true, ForceRemove: true, Version: build.BuilderV1,
	})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return buildError(resp.Body)
}

// contextTar is the build context: a Dockerfile and rootfs/.
func contextTar(busybox string) (io.Reader, error) {
	bin, err := os.ReadFile(busybox)
	if err != nil {
		return nil, err
	}
	list, err := exec.Command(busybox, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list: %w", busybox, err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	var werr error
	add := func(h *tar.Header, body []byte) {
		h.ModTime = time.Unix(0, 0)
		h.Size = int64(len(body))
		if err := tw.WriteHeader(h); err != nil && werr == nil {
			werr = err
		}
		if _, err := tw.Write(body); err != nil && werr == nil {
			werr = err
		}
	}
	add(&tar.Header{Name: "Dockerfile", Mode: 0o644, Typeflag: tar.TypeReg}, []byte("FROM scratch\nCOPY rootfs /\nLABEL ai.dstack.test=busybox\n"))
	add(&tar.Header{Name: "rootfs/", Mode: 0o755, Typeflag: tar.TypeDir}, nil)
	add(&tar.Header{Name: "rootfs/bin/", Mode: 0o755, Typeflag: tar.TypeDir}, nil)
	add(&tar.Header{Name: "rootfs/tmp/", Mode: 0o1777, Typeflag: tar.TypeDir}, nil)
	add(&tar.Header{Name: "rootfs/bin/busybox", Mode: 0o755, Typeflag: tar.TypeReg}, bin)
	for _, applet := range strings.Fields(string(list)) {
		if applet != "busybox" {
			add(&tar.Header{Name: "rootfs/bin/" + applet, Linkname: "busybox", Mode: 0o777, Typeflag: tar.TypeSymlink}, nil)
		}
	}
	if err := tw.Close(); err != nil && werr == nil {
		werr = err
	}
	return &buf, werr
}

// buildError reads the build's messages to their end and returns the
// error among them.
func buildError(r io.Reader) error {
	dec := json.NewDecoder(r)
	for {
		var m struct {
			Error       string `json:"error"`
			ErrorDetail *struct {
				Message string `json:"message"`
			} `json:"errorDetail"`
		}
		err := dec.Decode(&m)
		switch {
		case errors.Is(err, io.EOF):
			return nil
		case err != nil:
			return fmt.Errorf("read the build's output: %w", err)
		case m.ErrorDetail != nil && m.ErrorDetail.Message != "":
			return errors.New(m.ErrorDetail.Message)
		case m.Error != "":
			return errors.New(m.Error)
		}
	}
}

// staticBusybox finds a statically linked busybox: one that runs in an
// image that has nothing else.
func staticBusybox() (string, bool) {
	candidates := []string{"/bin/busybox", "/usr/bin/busybox"}
	if p, err := exec.LookPath("busybox"); err == nil {
		candidates = append(candidates, p)
	}
	for _, p := range candidates {
		f, err := elf.Open(p)
		if err != nil {
			continue
		}
		static := true
		for _, prog := range f.Progs {
			if prog.Type == elf.PT_INTERP {
				static = false
			}
		}
		f.Close()
		if static {
			return p, true
		}
	}
	return "", false
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
