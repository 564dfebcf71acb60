package local

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/dstackai/dstack/backend"
)

// List returns the containers labelled with serverID, whatever their state:
// created or restarting ones are pending, running or paused ones running,
// one being removed terminating, and an exited or dead one gone (its runner
// ended; Terminate removes it). LaunchedAt is the container's creation.
func (b *Backend) List(ctx context.Context, serverID string) ([]backend.Instance, error) {
	if serverID == "" {
		return nil, backend.Errorf(backend.ErrInvalid, "list", "InvalidRequest", "no server ID")
	}
	insts, err := b.list(ctx, label(backend.TagServerID, serverID))
	if err != nil {
		return nil, dockerError("list", err)
	}
	return insts, nil
}

// Terminate stops (SIGTERM, then SIGKILL after Config.StopTimeout) and
// removes the containers, in parallel. An ID Docker does not know, or a
// container already being removed, is not an error; a container that is
// not one of the backend's (no dstack:backend=local label) is refused with
// backend.ErrInvalid and left alone.
func (b *Backend) Terminate(ctx context.Context, cloudIDs []string) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
		sem  = make(chan struct{}, 8)
	)
	for _, id := range cloudIDs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			if err := b.terminate(ctx, id); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	switch len(errs) {
	case 0:
		return nil
	case 1:
		return errs[0]
	}
	return fmt.Errorf("terminate %d of %d containers: %w", len(errs), len(cloudIDs), errors.Join(errs...))
}

func (b *Backend) terminate(ctx context.Context, id string) error {
	res, err := b.docker.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if cerrdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return dockerError("terminate", err)
	}
	c := res.Container
	if c.Config == nil || c.Config.Labels[labelBackend] != Name {
		return backend.Errorf(backend.ErrInvalid, "terminate", "NotAnInstance", "container %s is not a local backend instance; not terminating it", id)
	}
	timeout := int(b.cfg.StopTimeout.Round(time.Second) / time.Second)
	if _, err := b.docker.ContainerStop(ctx, c.ID, client.ContainerStopOptions{Timeout: &timeout}); err != nil && !gone(err) {
		return dockerError("terminate", err)
	}
	if _, err := b.docker.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true}); err != nil && !gone(err) {
		return dockerError("terminate", err)
	}
	b.log.Info("terminated", "container", shortID(c.ID), "record", c.Config.Labels[backend.TagRecordID])
	return nil
}

// gone reports whether err says the container is gone or on its way: not
// found, or a removal already in progress (a conflict).
func gone(err error) bool { return cerrdefs.IsNotFound(err) || isConflict(err) }

func isConflict(err error) bool { return cerrdefs.IsConflict(err) }

// label is a "label" filter value.
func label(key, value string) string { return key + "=" + value }

// list returns the backend's containers that carry every label given (as
// "key=value"), oldest first, then by record ID.
func (b *Backend) list(ctx context.Context, labels ...string) ([]backend.Instance, error) {
	args := make(client.Filters).Add("label", label(labelBackend, Name)).Add("label", labels...)
	res, err := b.docker.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: args})
	if err != nil {
		return nil, err
	}
	out := make([]backend.Instance, 0, len(res.Items))
	for _, c := range res.Items {
		out = append(out, instance(c.ID, c.Labels, c.State, time.Unix(c.Created, 0)))
	}
	sort.SliceStable(out, func(i, j int) bool {
		if !out[i].LaunchedAt.Equal(out[j].LaunchedAt) {
			return out[i].LaunchedAt.Before(out[j].LaunchedAt)
		}
		return out[i].Tags.RecordID < out[j].Tags.RecordID
	})
	return out, nil
}

// inspectInstance is the instance of an inspected container.
func inspectInstance(c container.InspectResponse) backend.Instance {
	var (
		labels  map[string]string
		state   container.ContainerState
		created time.Time
	)
	if c.Config != nil {
		labels = c.Config.Labels
	}
	created, _ = time.Parse(time.RFC3339Nano, c.Created)
	if c.State != nil {
		state = c.State.Status
	}
	return instance(c.ID, labels, state, created)
}

// instance builds an Instance from a container's labels and state.
func instance(id string, labels map[string]string, state container.ContainerState, created time.Time) backend.Instance {
	return backend.Instance{
		CloudID: id,
		Offer: backend.OfferKey{
			Backend:      Name,
			Region:       labels[labelRegion],
			InstanceType: labels[labelInstanceType],
			Spot:         labels[labelSpot] == "true",
		},
		Tags: backend.Tags{
			ServerID:  labels[backend.TagServerID],
			LimitID:   labels[backend.TagLimitID],
			RecordID:  labels[backend.TagRecordID],
			LaunchKey: labels[backend.TagLaunchKey],
		},
		State:      mapState(state),
		LaunchedAt: created.UTC(),
	}
}

// mapState maps a Docker container state onto the backend's.
func mapState(s container.ContainerState) backend.InstanceState {
	switch s {
	case container.StateCreated, container.StateRestarting:
		return backend.StatePending
	case container.StateRunning, container.StatePaused:
		return backend.StateRunning
	case container.StateRemoving:
		return backend.StateTerminating
	}
	// exited, dead, or a state this backend does not know.
	return backend.StateGone
}
