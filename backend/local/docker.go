package local

import (
	"context"
	"errors"
	"io"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/system"
	"github.com/docker/docker/client"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/dstackai/dstack/backend"
)

// Docker is the part of the Docker Engine API the backend uses: the moby
// client (*client.Client, created with client.WithAPIVersionNegotiation(),
// which works with Engine API 1.41 and later) satisfies it.
type Docker interface {
	Info(ctx context.Context) (system.Info, error)
	ImageInspect(ctx context.Context, ref string, opts ...client.ImageInspectOption) (image.InspectResponse, error)
	ImageBuild(ctx context.Context, buildContext io.Reader, options build.ImageBuildOptions) (build.ImageBuildResponse, error)
	NetworkInspect(ctx context.Context, networkID string, options network.InspectOptions) (network.Inspect, error)
	ContainerCreate(ctx context.Context, config *container.Config, hostConfig *container.HostConfig, networkingConfig *network.NetworkingConfig, platform *ocispec.Platform, containerName string) (container.CreateResponse, error)
	ContainerStart(ctx context.Context, containerID string, options container.StartOptions) error
	ContainerInspect(ctx context.Context, containerID string) (container.InspectResponse, error)
	ContainerList(ctx context.Context, options container.ListOptions) ([]container.Summary, error)
	ContainerStop(ctx context.Context, containerID string, options container.StopOptions) error
	ContainerRemove(ctx context.Context, containerID string, options container.RemoveOptions) error
}

var _ Docker = (*client.Client)(nil)

// dockerError turns a Docker Engine error into a *backend.Error of op: a
// missing image or network and a rejected parameter are ErrInvalid (retrying
// will not help), exhausted resources ErrNoCapacity; an unreachable daemon
// and anything else have no kind the server acts on. Context errors pass
// through as they are.
func dockerError(op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	var be *backend.Error
	if errors.As(err, &be) {
		return err
	}
	e := &backend.Error{Op: op, Reason: err.Error(), Err: err}
	switch {
	case cerrdefs.IsNotFound(err):
		e.Kind, e.Code = backend.ErrInvalid, "NotFound"
	case cerrdefs.IsInvalidArgument(err):
		e.Kind, e.Code = backend.ErrInvalid, "InvalidParameter"
	case cerrdefs.IsResourceExhausted(err):
		e.Kind, e.Code = backend.ErrNoCapacity, "ResourceExhausted"
	case client.IsErrConnectionFailed(err):
		e.Code = "DaemonUnreachable"
	case cerrdefs.IsConflict(err):
		e.Code = "Conflict"
	case cerrdefs.IsUnavailable(err):
		e.Code = "Unavailable"
	}
	return e
}
