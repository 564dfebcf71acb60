package fake_test

import (
	"testing"

	"github.com/dstackai/dstack/backend"
	"github.com/dstackai/dstack/backend/backendtest"
	"github.com/dstackai/dstack/backend/fake"
)

func TestContract(t *testing.T) {
	t.Parallel()
	backendtest.Run(t, harness)
}

// harness is the fake's contract harness: the cloud limits capacity as
// asked, and a restart is a new handle on the same cloud.
func harness(t *testing.T, o backendtest.Options) *backendtest.Harness {
	b := fake.New(nil)
	offer := fake.Catalogue[0]
	if o.Capacity > 0 {
		b.SetCapacity(offer.Key(), o.Capacity)
	}
	return &backendtest.Harness{
		Backend: b,
		Restart: func(*testing.T) backend.Backend { return b.Restarted() },
		Offer:   offer,
	}
}
