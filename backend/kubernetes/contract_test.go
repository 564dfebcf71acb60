package kubernetes

import (
	"testing"

	"github.com/dstackai/dstack/backend"
	"github.com/dstackai/dstack/backend/backendtest"
	"github.com/dstackai/dstack/internal/kubetest"
)

// TestContract runs the backend contract suite against a real API server
// (internal/kubetest: etcd, kube-apiserver, kube-scheduler, kwok nodes):
// each subtest has a namespace of its own; capacity is a ResourceQuota on
// the namespace's Pods; a restart is a new backend over the same cluster.
func TestContract(t *testing.T) {
	t.Parallel()
	c := cluster(t)
	backendtest.Run(t, func(t *testing.T, o backendtest.Options) *backendtest.Harness {
		ns := namespace(t, c)
		if o.Capacity > 0 {
			quota(t, c, ns, o.Capacity)
		}
		return &backendtest.Harness{
			Backend:            newBackend(t, c, ns, nil),
			Restart:            func(t *testing.T) backend.Backend { return newBackend(t, c, ns, nil) },
			Offer:              backend.Offer{Backend: Name, Region: kubetest.ContextName, InstanceType: typeStd},
			UnsoldInstanceType: "p5.48xlarge",
			UnknownCloudID:     "dstack-0123456789abcdef",
		}
	})
}
