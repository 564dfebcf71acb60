package aws

import (
	"testing"

	"github.com/dstackai/dstack/backend"
	"github.com/dstackai/dstack/backend/backendtest"
)

// TestContract runs the backend contract suite through the real SDK
// against ec2fake: capacity is ec2fake's SetCapacity, a restart a new
// backend (no caches, no known regions but the default) on the same cloud.
func TestContract(t *testing.T) {
	t.Parallel()
	backendtest.Run(t, func(t *testing.T, o backendtest.Options) *backendtest.Harness {
		e := setup(t)
		offer := backend.Offer{Backend: Name, Region: "us-east-1", InstanceType: "m5.large"}
		if o.Capacity > 0 {
			e.fake.SetCapacity(offer.Region, offer.InstanceType, offer.Spot, o.Capacity)
		}
		return &backendtest.Harness{
			Backend:            e.b,
			Restart:            func(*testing.T) backend.Backend { return e.newBackend() },
			Offer:              offer,
			UnsoldInstanceType: "m99.nonexistent",
			UnknownRegion:      "xx-nowhere-1",
			ServerURL:          testURL,
		}
	})
}
