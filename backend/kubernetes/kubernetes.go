package kubernetes

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/backend"
)

// Node labels the backend reads.
const (
	LabelInstanceType = "node.kubernetes.io/instance-type"
	LabelGPUProduct   = "nvidia.com/gpu.product"
	LabelGPUMemory    = "nvidia.com/gpu.memory" // MiB, as GPU feature discovery writes it
	ResourceGPU       = corev1.ResourceName("nvidia.com/gpu")
)

// spotLabels are the node labels (and values) that mark spot capacity:
// Karpenter's, EKS managed node groups', GKE's spot and preemptible VMs.
var spotLabels = []struct{ Key, Value string }{
	{"karpenter.sh/capacity-type", "spot"},
	{"eks.amazonaws.com/capacityType", "SPOT"},
	{"cloud.google.com/gke-spot", "true"},
	{"cloud.google.com/gke-preemptible", "true"},
}

// nodePools is Karpenter's NodePool resource, read when present.
var nodePools = schema.GroupVersionResource{Group: "karpenter.sh", Version: "v1", Resource: "nodepools"}

// offersTTL is how long the nodes' offers are kept.
const offersTTL = 15 * time.Second

// Backend launches on-demand runners as Pods in one namespace of one
// cluster. Create it with New; it is safe for concurrent use.
type Backend struct {
	cfg     Config
	region  string
	client  k8s.Interface
	dynamic dynamic.Interface

	mu       sync.Mutex
	types    map[typeKey]*nodeType // the last scan's, by type and purchase
	pools    map[typeKey]bool      // types a Karpenter NodePool allows
	scanned  time.Time
	watching map[string]*watch // by server ID
	closed   bool
}

// typeKey is an instance type at a purchase type.
type typeKey struct {
	Type string
	Spot bool
}

// nodeType is what the cluster's nodes of one instance type and purchase
// type have: the least allocatable of any of them, so that a Pod sized to
// it fits every one.
type nodeType struct {
	milliCPU  int64
	memory    int64 // bytes
	gpus      int64
	gpuName   string
	gpuMemory int64 // MiB
	nodes     int
}

// New returns a backend for c; it makes no call until used (Check makes
// one).
func New(c Config) (*Backend, error) {
	c.applyDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	rc, err := c.restConfig()
	if err != nil {
		return nil, err
	}
	rc.Wrap(func(rt http.RoundTripper) http.RoundTripper { return noRetryAfter{rt} })
	client, err := k8s.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: %w", err)
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: %w", err)
	}
	b := &Backend{cfg: c, region: c.Region(), client: client, dynamic: dyn, watching: map[string]*watch{}}
	c.REST = nil
	return b, nil
}

// noRetryAfter hides a 429's Retry-After header from client-go, which would
// otherwise wait and retry up to ten times inside one call: the backend
// returns ErrThrottled with the delay (from the Status body's
// retryAfterSeconds, or the header, kept as X-Dstack-Retry-After) and the
// controller paces itself.
type noRetryAfter struct{ rt http.RoundTripper }

func (n noRetryAfter) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := n.rt.RoundTrip(req)
	if err == nil && resp.StatusCode == http.StatusTooManyRequests {
		if v := resp.Header.Get("Retry-After"); v != "" {
			resp.Header.Del("Retry-After")
			resp.Header.Set("X-Dstack-Retry-After", v)
		}
	}
	return resp, err
}

// Name is "kubernetes".
func (b *Backend) Name() string { return Name }

// DefaultRegion is the backend's one region: the context's name.
func (b *Backend) DefaultRegion() string { return b.region }

// Namespace is where the backend's Pods go.
func (b *Backend) Namespace() string { return b.cfg.Namespace }

// Client is the backend's clientset (for the server's info page and tests).
func (b *Backend) Client() k8s.Interface { return b.client }

// String names the backend without its credentials.
func (b *Backend) String() string {
	return fmt.Sprintf("kubernetes backend (context %s, namespace %s)", b.region, b.cfg.Namespace)
}

// RESTConfig is a test's way to reach the cluster the backend uses.
func RESTConfig(c Config) (*rest.Config, error) { c.applyDefaults(); return c.restConfig() }

// Offers lists the instance types of the cluster's nodes and of its
// Karpenter NodePools, each at the purchase types seen (spot by the
// capacity-type labels), sized to the least allocatable node of the type
// less the reserve. Prices are 0: the cluster does not say what its nodes
// cost. A region other than the backend's is ErrInvalid.
func (b *Backend) Offers(ctx context.Context, region string) ([]backend.Offer, error) {
	if region != b.region {
		return nil, backend.Errorf(backend.ErrInvalid, "offers", "UnknownRegion",
			"the kubernetes backend's region is its context %q, not %q", b.region, region)
	}
	types, err := b.nodeTypes(ctx, false)
	if err != nil {
		return nil, err
	}
	var out []backend.Offer
	for k, t := range types {
		o, ok := b.offer(k, t)
		if ok {
			out = append(out, o)
		}
	}
	slices.SortFunc(out, func(a, c backend.Offer) int {
		if a.InstanceType != c.InstanceType {
			return strings.Compare(a.InstanceType, c.InstanceType)
		}
		if a.Spot == c.Spot {
			return 0
		}
		if a.Spot {
			return 1
		}
		return -1
	})
	return out, nil
}

// offer is the offer of one node type, false when nothing is left of it
// after the reserve.
func (b *Backend) offer(k typeKey, t *nodeType) (backend.Offer, bool) {
	cpu, mem := b.podSize(t)
	if cpu < 1000 || mem < 64<<20 {
		return backend.Offer{}, false
	}
	o := backend.Offer{
		Backend: Name, Region: b.region, InstanceType: k.Type, Spot: k.Spot,
		CPUs: int(cpu / 1000), MemoryMiB: mem >> 20,
		// A Pod's image is fixed: each runner Pod serves the jobs of one
		// image (see docs/kubernetes.md).
		PerImage: true,
	}
	for range t.gpus {
		o.GPUs = append(o.GPUs, api.GPU{Name: t.gpuName, MemoryMiB: t.gpuMemory})
	}
	return o, true
}

// podSize is what a runner Pod on a node of t requests: its allocatable
// less the reserve.
func (b *Backend) podSize(t *nodeType) (milliCPU, memory int64) {
	return t.milliCPU - b.cfg.ReserveMilliCPU, t.memory - b.cfg.ReserveMemoryMiB<<20
}

// nodeTypes scans the nodes (and NodePools), at most every offersTTL
// unless fresh.
func (b *Backend) nodeTypes(ctx context.Context, fresh bool) (map[typeKey]*nodeType, error) {
	b.mu.Lock()
	if !fresh && b.types != nil && b.cfg.Now().Sub(b.scanned) < offersTTL {
		t := b.types
		b.mu.Unlock()
		return t, nil
	}
	b.mu.Unlock()
	nodes, err := b.client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, classify("offers", err)
	}
	types := map[typeKey]*nodeType{}
	for i := range nodes.Items {
		n := &nodes.Items[i]
		it := n.Labels[LabelInstanceType]
		if it == "" || n.Spec.Unschedulable {
			continue
		}
		k := typeKey{Type: it, Spot: spotNode(n.Labels)}
		alloc := n.Status.Allocatable
		nt := &nodeType{
			milliCPU: alloc.Cpu().MilliValue(),
			memory:   alloc.Memory().Value(),
			nodes:    1,
		}
		if q, ok := alloc[ResourceGPU]; ok {
			nt.gpus = q.Value()
			nt.gpuName = n.Labels[LabelGPUProduct]
			if nt.gpuName == "" {
				nt.gpuName = "NVIDIA GPU"
			}
			nt.gpuMemory, _ = strconv.ParseInt(n.Labels[LabelGPUMemory], 10, 64)
		}
		if have, ok := types[k]; ok {
			have.milliCPU = min(have.milliCPU, nt.milliCPU)
			have.memory = min(have.memory, nt.memory)
			have.gpus = min(have.gpus, nt.gpus)
			have.nodes++
			continue
		}
		types[k] = nt
	}
	pools, err := b.poolTypes(ctx)
	if err != nil {
		return nil, err
	}
	// A type a NodePool allows at a purchase type no node has yet is
	// offered with the size of its nodes of the other purchase type: the
	// instance type fixes the machine.
	for k := range pools {
		if _, ok := types[k]; ok {
			continue
		}
		if other, ok := types[typeKey{Type: k.Type, Spot: !k.Spot}]; ok {
			cp := *other
			cp.nodes = 0
			types[k] = &cp
		} else {
			b.cfg.Logger.Debug("a NodePool allows an instance type no node has shown yet: not offered until one does", "type", k.Type, "spot", k.Spot)
		}
	}
	b.mu.Lock()
	b.types, b.pools, b.scanned = types, pools, b.cfg.Now()
	b.mu.Unlock()
	return types, nil
}

// spotNode reports whether a node's labels mark it spot.
func spotNode(labels map[string]string) bool {
	for _, l := range spotLabels {
		if labels[l.Key] == l.Value {
			return true
		}
	}
	return false
}

// poolTypes reads the instance types Karpenter's NodePools allow
// (requirement node.kubernetes.io/instance-type In [...], at the capacity
// types of karpenter.sh/capacity-type In [...], on-demand when unsaid). A
// cluster without the CRD, or a user not allowed to read it, has none.
func (b *Backend) poolTypes(ctx context.Context) (map[typeKey]bool, error) {
	list, err := b.dynamic.Resource(nodePools).List(ctx, metav1.ListOptions{})
	if err != nil {
		b.cfg.Logger.Debug("no Karpenter NodePools read", "err", err)
		return nil, nil //nolint:nilerr // NodePools are optional: absent or unreadable, none is used
	}
	out := map[typeKey]bool{}
	for _, np := range list.Items {
		reqs, _, _ := unstructuredSlice(np.Object, "spec", "template", "spec", "requirements")
		var types []string
		spot, onDemand := false, true
		for _, r := range reqs {
			m, ok := r.(map[string]any)
			if !ok || m["operator"] != "In" {
				continue
			}
			vals, _ := m["values"].([]any)
			switch m["key"] {
			case LabelInstanceType:
				for _, v := range vals {
					if s, ok := v.(string); ok {
						types = append(types, s)
					}
				}
			case "karpenter.sh/capacity-type":
				onDemand = false
				for _, v := range vals {
					switch v {
					case "spot":
						spot = true
					case "on-demand":
						onDemand = true
					}
				}
			}
		}
		for _, t := range types {
			if onDemand {
				out[typeKey{Type: t}] = true
			}
			if spot {
				out[typeKey{Type: t, Spot: true}] = true
			}
		}
	}
	return out, nil
}

func unstructuredSlice(obj map[string]any, fields ...string) ([]any, bool, error) {
	cur := any(obj)
	for _, f := range fields {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false, nil
		}
		cur = m[f]
	}
	s, ok := cur.([]any)
	return s, ok, nil
}

// quantity renders n of a resource for a Pod's requests.
func milliQuantity(milli int64) resource.Quantity {
	return *resource.NewMilliQuantity(milli, resource.DecimalSI)
}
