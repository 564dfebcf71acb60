package local

import (
	"context"
	"io"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"

	"github.com/dstackai/dstack/backend"
)

// Docker is the part of the Docker Engine API the backend uses: the moby
// client (*client.Client, which negotiates the API version and works with
// Engine API 1.41 and later) satisfies it.
type Docker interface {
	Info(ctx context.Context, options client.InfoOptions) (client.SystemInfoResult, error)
	ImageInspect(ctx context.Context, ref string, opts ...client.ImageInspectOption) (client.ImageInspectResult, error)
	ImageBuild(ctx context.Context, buildContext io.Reader, options client.ImageBuildOptions) (client.ImageBuildResult, error)
	NetworkInspect(ctx context.Context, networkID string, options client.NetworkInspectOptions) (client.NetworkInspectResult, error)
	ContainerCreate(ctx context.Context, options client.ContainerCreateOptions) (client.ContainerCreateResult, error)
	ContainerStart(ctx context.Context, containerID string, options client.ContainerStartOptions) (client.ContainerStartResult, error)
	ContainerInspect(ctx context.Context, containerID string, options client.ContainerInspectOptions) (client.ContainerInspectResult, error)
	ContainerList(ctx context.Context, options client.ContainerListOptions) (client.ContainerListResult, error)
	ContainerStop(ctx context.Context, containerID string, options client.ContainerStopOptions) (client.ContainerStopResult, error)
	ContainerRemove(ctx context.Context, containerID string, options client.ContainerRemoveOptions) (client.ContainerRemoveResult, error)
}

var _ Docker = (*client.Client)(nil)

// dockerError turns a Docker Engine error into a *backend.Error of op: a
// missing image or network and a rejected parameter are ErrInvalid (retrying
// will not help), exhausted resources ErrNoCapacity; an unreachable daemon
// and anything else have no kind the server acts on. Context errors pass
// through as they are.
func dockerError(op string, err error) error {
	if backend.AsIs(err) {
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
