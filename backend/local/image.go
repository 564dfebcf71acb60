package local

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/build"
)

// ImageRepository is the repository of the runner images BuildImage tags.
const ImageRepository = "dstack-local-runner"

// BusyboxPaths are where BuildImage looks for a static busybox to give the
// image a shell: Debian's busybox-static package installs /bin/busybox
// (`apt-get install -y busybox-static`, or `make local-image`, which does it).
var BusyboxPaths = []string{"/bin/busybox", "/usr/bin/busybox"}

// dockerfile builds the runner image FROM scratch: the static dstack-runner,
// busybox for a shell (/bin/sh and the usual tools, as symlinks) and the
// directories the runner and its jobs use. No CA certificates, no package
// manager, nothing pulled: the engine needs no registry.
const dockerfile = `FROM scratch
COPY busybox /bin/busybox
COPY dstack-runner ` + runnerPath + `
RUN ["/bin/busybox", "sh", "-c", "/bin/busybox --install -s /bin && mkdir -p -m 1777 /tmp && mkdir -p /root ` + runnerDataDir + `"]
ENV PATH=/usr/local/bin:/bin HOME=/root
ENTRYPOINT ["` + runnerPath + `"]
CMD ["--help"]
`

// BuildImage builds the runner image from the static dstack-runner binary at
// runnerBinaryPath and the host's static busybox (BusyboxPaths), through the
// Engine's build API with the context in memory, and returns its reference,
// dstack-local-runner:<hash of the binary, busybox and Dockerfile>. An image
// with that reference already there is reused, so calling it at every server
// start costs an inspect. The binary must be statically linked
// (CGO_ENABLED=0, as `make build` does): the image has no C library.
func BuildImage(ctx context.Context, docker Docker, runnerBinaryPath string) (string, error) {
	runnerBin, err := readStatic(runnerBinaryPath, "the dstack-runner binary", "build it with CGO_ENABLED=0 (`make build` writes bin/dstack-runner)")
	if err != nil {
		return "", err
	}
	busybox, err := findBusybox()
	if err != nil {
		return "", err
	}
	h := sha256.New()
	for _, part := range [][]byte{runnerBin, busybox, []byte(dockerfile)} {
		fmt.Fprintf(h, "%d\n", len(part))
		h.Write(part)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	ref := ImageRepository + ":" + sum[:16]

	if _, err := docker.ImageInspect(ctx, ref); err == nil {
		return ref, nil
	} else if !cerrdefs.IsNotFound(err) {
		return "", fmt.Errorf("inspect runner image %s: %w", ref, err)
	}

	buildContext, err := tarContext(map[string]file{
		"Dockerfile":    {data: []byte(dockerfile), mode: 0o644},
		"busybox":       {data: busybox, mode: 0o755},
		"dstack-runner": {data: runnerBin, mode: 0o755},
	})
	if err != nil {
		return "", err
	}
	resp, err := docker.ImageBuild(ctx, bytes.NewReader(buildContext), build.ImageBuildOptions{
		Tags:        []string{ref},
		Version:     build.BuilderV1, // BuildKit over the API needs a session; v1 needs nothing
		Remove:      true,
		ForceRemove: true,
		Labels:      map[string]string{"dstack.runner-image": sum},
	})
	if err != nil {
		return "", fmt.Errorf("build runner image %s: %w", ref, err)
	}
	defer resp.Body.Close()
	if err := readBuildOutput(resp.Body); err != nil {
		return "", fmt.Errorf("build runner image %s: %w", ref, err)
	}
	if _, err := docker.ImageInspect(ctx, ref); err != nil {
		return "", fmt.Errorf("runner image %s is missing after its build: %w", ref, err)
	}
	return ref, nil
}

// readStatic reads an executable that must run FROM scratch: an ELF file
// with no dynamic loader.
func readStatic(path, what, fix string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w (%s)", what, err, fix)
	}
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("%s %s is not an ELF executable: %w (%s)", what, path, err, fix)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return nil, fmt.Errorf("%s %s is dynamically linked: %s", what, path, fix)
		}
	}
	return b, nil
}

// findBusybox reads the first static busybox of BusyboxPaths.
func findBusybox() ([]byte, error) {
	const fix = "install Debian's busybox-static: `apt-get install -y busybox-static` (or run `make local-image`)"
	for _, p := range BusyboxPaths {
		if _, err := os.Stat(p); err != nil {
			continue
		}
		return readStatic(p, "busybox", fix)
	}
	return nil, fmt.Errorf("no busybox at %s for the runner image's shell: %s", strings.Join(BusyboxPaths, " or "), fix)
}

type file struct {
	data []byte
	mode int64
}

// tarContext is a build context holding files, in name order.
func tarContext(files map[string]file) ([]byte, error) {
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	// A fixed order and time keep the context, and the build cache, stable.
	slices.Sort(names)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, n := range names {
		f := files[n]
		hdr := &tar.Header{Name: n, Mode: f.mode, Size: int64(len(f.data)), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0), Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// readBuildOutput reads the build's JSON message stream to its end and
// returns the error it reports, with the last lines of output for context.
func readBuildOutput(r io.Reader) error {
	dec := json.NewDecoder(r)
	var tail []string
	for {
		var m struct {
			Stream      string `json:"stream"`
			Error       string `json:"error"`
			ErrorDetail *struct {
				Message string `json:"message"`
			} `json:"errorDetail"`
		}
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("read the build output: %w", err)
		}
		if s := strings.TrimSpace(m.Stream); s != "" {
			tail = append(tail, s)
			if len(tail) > 10 {
				tail = tail[1:]
			}
		}
		msg := m.Error
		if m.ErrorDetail != nil && m.ErrorDetail.Message != "" {
			msg = m.ErrorDetail.Message
		}
		if msg != "" {
			return fmt.Errorf("%s (last output: %s)", msg, strings.Join(tail, " | "))
		}
	}
}
