package local

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"

	"github.com/dstackai/dstack/internal/scratch"
)

// ImageRepository is the repository of the runner images BuildImage tags.
const ImageRepository = "dstack-local-runner"

// busyboxFix says how to get the static busybox that gives the image a
// shell.
const busyboxFix = "install Debian's busybox-static: `apt-get install -y busybox-static` (or run `make local-image`)"

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
// runnerBinaryPath and the host's static busybox (scratch.BusyboxPaths), through the
// Engine's build API with the context in memory, and returns its reference,
// dstack-local-runner:<hash of the binary, busybox and Dockerfile>. An image
// with that reference already there is reused, so calling it at every server
// start costs an inspect. The binary must be statically linked
// (CGO_ENABLED=0, as `make build` does): the image has no C library.
func BuildImage(ctx context.Context, docker Docker, runnerBinaryPath string) (string, error) {
	runnerBin, err := scratch.ReadStatic(runnerBinaryPath, "the dstack-runner binary", "build it with CGO_ENABLED=0 (`make build` writes bin/dstack-runner)")
	if err != nil {
		return "", err
	}
	bbPath := scratch.FindBusybox()
	if bbPath == "" {
		return "", fmt.Errorf("no static busybox at %s for the runner image's shell: %s", strings.Join(scratch.BusyboxPaths, " or "), busyboxFix)
	}
	busybox, err := scratch.ReadStatic(bbPath, "busybox", busyboxFix)
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

	err = scratch.Build(ctx, docker, []scratch.Entry{
		{Name: "Dockerfile", Data: []byte(dockerfile), Mode: 0o644},
		{Name: "busybox", Data: busybox, Mode: 0o755},
		{Name: "dstack-runner", Data: runnerBin, Mode: 0o755},
	}, client.ImageBuildOptions{Tags: []string{ref}, Labels: map[string]string{"dstack.runner-image": sum}})
	if err != nil {
		return "", fmt.Errorf("build runner image %s: %w", ref, err)
	}
	if _, err := docker.ImageInspect(ctx, ref); err != nil {
		return "", fmt.Errorf("runner image %s is missing after its build: %w", ref, err)
	}
	return ref, nil
}
