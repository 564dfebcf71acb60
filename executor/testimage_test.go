package executor

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/dstackai/dstack/executor/executortest"
)

// testImage is the image the Docker executor's tests run; no registry is
// needed (see package executortest).
const testImage = executortest.Image

// dockerSetup returns a Docker executor of its own (Owner unique to the
// test unless opts sets one) and a fixture, once the test image is there.
// It skips the test when no Docker Engine answers, and fails it instead
// when CI is set. The test fails if its containers outlive it.
func dockerSetup(t testing.TB, opts Options) (*Docker, fixture) {
	t.Helper()
	executortest.RequireDocker(t)
	if opts.Owner == "" {
		opts.Owner = fmt.Sprintf("dstack-test-%s-%d", t.Name(), time.Now().UnixNano())
	}
	d, err := NewDocker(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	t.Cleanup(func() {
		if ids := ownedContainers(t, d); len(ids) > 0 {
			t.Errorf("containers left behind: %v", ids)
			_ = d.Cleanup(context.Background())
		}
	})
	return d, setup(t)
}

// ownedContainers lists the containers of d's owner.
func ownedContainers(t testing.TB, d *Docker) []string {
	t.Helper()
	list, err := d.cli.ContainerList(context.Background(), containerListOwned(d.owner))
	if err != nil {
		t.Fatalf("list containers: %v", err)
	}
	var ids []string
	for _, c := range list.Items {
		ids = append(ids, short(c.ID)+" "+string(c.State))
	}
	return ids
}
