package local

import (
	"testing"
	"time"

	"github.com/dstackai/dstack/backend"
	"github.com/dstackai/dstack/backend/backendtest"
)

// TestContract runs the backend contract suite on the real Docker Engine
// (skipped without one, unless CI is set): capacity is
// Config.MaxContainers, a restart a new Backend on the same engine.
func TestContract(t *testing.T) {
	t.Parallel()
	backendtest.Run(t, func(t *testing.T, o backendtest.Options) *backendtest.Harness {
		docker, image := dockerImage(t)
		offer := backend.Offer{Backend: Name, Region: Region, InstanceType: "local.small"}
		cfg := Config{Image: image, StopTimeout: time.Second, Logger: testLogger(t)}
		if o.Capacity > 0 {
			// The suite's server ID is its own, so none of its containers
			// are live yet: the cap is the room.
			cfg.MaxContainers = map[string]int{offer.InstanceType + "/on-demand": o.Capacity}
		}
		newBackend := func(t *testing.T) backend.Backend {
			b, err := New(docker, cfg)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
		return &backendtest.Harness{
			Backend:        newBackend(t),
			Restart:        newBackend,
			Offer:          offer,
			UnknownCloudID: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
			ServerURL:      unusedURL(t),
		}
	})
}
