package kubernetes

import (
	"context"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/dstackai/dstack/backend"
)

// TestKarpenterNodePool: with Karpenter's NodePool CRD in the cluster, a
// pool's instance types are offered at its capacity types where the size is
// known from a node of the type (g5.xlarge spot, from the on-demand node);
// a type no node has shown is not offered; and a Pod of a pool's type is not
// taken for unschedulable for good (the pool brings a node).
func TestKarpenterNodePool(t *testing.T) {
	t.Parallel()
	c := cluster(t)
	dyn, err := dynamic.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	crd := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1",
		"kind":       "CustomResourceDefinition",
		"metadata":   map[string]any{"name": "nodepools.karpenter.sh"},
		"spec": map[string]any{
			"group": "karpenter.sh",
			"names": map[string]any{"kind": "NodePool", "plural": "nodepools", "singular": "nodepool", "listKind": "NodePoolList"},
			"scope": "Cluster",
			"versions": []any{map[string]any{
				"name": "v1", "served": true, "storage": true,
				"schema": map[string]any{"openAPIV3Schema": map[string]any{"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
			}},
		},
	}}
	crds := schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	if _, err := dyn.Resource(crds).Create(ctx, crd, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pool := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "karpenter.sh/v1", "kind": "NodePool", "metadata": map[string]any{"name": "gpu"},
		"spec": map[string]any{"template": map[string]any{"spec": map[string]any{"requirements": []any{
			map[string]any{"key": LabelInstanceType, "operator": "In", "values": []any{typeGPU, "c6i.large"}},
			map[string]any{"key": "karpenter.sh/capacity-type", "operator": "In", "values": []any{"spot", "on-demand"}},
		}}}},
	}}
	poll(t, 30*time.Second, "the NodePool CRD served", func() bool {
		_, err := dyn.Resource(nodePools).Create(ctx, pool, metav1.CreateOptions{})
		return err == nil
	})
	ns := namespace(t, c)
	b := newBackend(t, c, ns, nil)
	offers, err := b.Offers(ctxT(t), "kubetest")
	if err != nil {
		t.Fatal(err)
	}
	keys := map[backend.OfferKey]backend.Offer{}
	for _, o := range offers {
		keys[o.Key()] = o
	}
	spotGPU, ok := keys[offerOf(typeGPU, true).Key()]
	if !ok || spotGPU.CPUs != 3 || len(spotGPU.GPUs) != 1 {
		t.Errorf("the pool's spot %s is %+v (offered: %v)", typeGPU, spotGPU, ok)
	}
	if slices.ContainsFunc(offers, func(o backend.Offer) bool { return o.InstanceType == "c6i.large" }) {
		t.Error("c6i.large, which no node has shown, is offered")
	}
	// No spot GPU node exists: the scheduler rules every node out, but the
	// pool may bring one, so the Pod waits for the timeout.
	server := "srv-" + randomHex(4)
	got, err := b.Launch(ctxT(t), request(server, offerOf(typeGPU, true), 1))
	if err != nil {
		t.Fatal(err)
	}
	poll(t, 30*time.Second, "the scheduler's verdict", func() bool {
		p, err := c.Client.CoreV1().Pods(ns).Get(ctx, got[0].CloudID, metav1.GetOptions{})
		return err == nil && len(p.Status.Conditions) > 0
	})
	ins, err := b.List(ctxT(t), server)
	if err != nil || len(ins) != 1 || ins[0].State != backend.StatePending {
		t.Errorf("a Pod of the pool's type = %+v, %v; want pending, waiting for the pool's node", ins, err)
	}
}
