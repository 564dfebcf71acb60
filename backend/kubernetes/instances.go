package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/ptr"

	"github.com/dstackai/dstack/backend"
)

// selector selects the runner Pods of one server.
func selector(serverID string) string {
	return labels.SelectorFromSet(labels.Set{LabelManagedBy: ManagedBy, keyServerID: labelValue(serverID)}).String()
}

// List returns the server's runner Pods in the namespace. A Pod that is
// deleted or deleting (evicted, drained, its node gone), that has ended, or
// that no node will take (see unschedulable) is StateGone; the last with a
// Failure of kind ErrNoCapacity.
func (b *Backend) List(ctx context.Context, serverID string) ([]backend.Instance, error) {
	b.watch(serverID)
	list, err := b.client.CoreV1().Pods(b.cfg.Namespace).List(ctx, metav1.ListOptions{LabelSelector: selector(serverID)})
	if err != nil {
		return nil, classify("list", err)
	}
	out := make([]backend.Instance, 0, len(list.Items))
	for i := range list.Items {
		p := &list.Items[i]
		if p.Annotations[keyServerID] != serverID {
			continue // another server whose ID hashes to the same label
		}
		out = append(out, b.instance(p))
	}
	return out, nil
}

// instance is the Instance a runner Pod is.
func (b *Backend) instance(p *corev1.Pod) backend.Instance {
	a := p.Annotations
	in := backend.Instance{
		CloudID: p.Name,
		Offer: backend.OfferKey{
			Backend: Name, Region: b.region, InstanceType: a[keyType], Spot: a[keySpot] == "true",
		},
		Tags:       backend.Tags{ServerID: a[keyServerID], LimitID: a[keyLimitID], RecordID: a[keyRecordID], LaunchKey: a[keyLaunchKey]},
		LaunchedAt: p.CreationTimestamp.Time,
		Host:       p.Spec.NodeName,
	}
	if r := a[keyRegion]; r != "" {
		in.Offer.Region = r
	}
	in.State, in.Failure = b.state(p)
	return in
}

// state maps a Pod's phase onto an InstanceState.
func (b *Backend) state(p *corev1.Pod) (backend.InstanceState, error) {
	switch {
	case p.DeletionTimestamp != nil:
		// Deleted by the backend (terminating), or by someone else: a
		// drain, an eviction, a node going away. Either way its runner is
		// leaving: the job it holds is requeued at once.
		return backend.StateGone, nil
	case p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed:
		return backend.StateGone, nil
	case p.Status.Phase == corev1.PodRunning:
		return backend.StateRunning, nil
	}
	if err := b.unschedulable(p); err != nil {
		return backend.StateGone, err
	}
	return backend.StatePending, nil
}

// unschedulable says why no node will take a Pod the scheduler could not
// place: it has waited ScheduleTimeout, or the scheduler's message says that
// no node can ever take it (every node ruled out by the type's selector or
// a taint, no node of the type being there) and no Karpenter NodePool
// brings nodes of its type. It returns nil while the Pod may still be
// placed.
func (b *Backend) unschedulable(p *corev1.Pod) error {
	if p.Spec.NodeName != "" {
		return nil
	}
	var cond *corev1.PodCondition
	for i := range p.Status.Conditions {
		c := &p.Status.Conditions[i]
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
			cond = c
		}
	}
	if cond == nil {
		return nil
	}
	waited := b.cfg.Now().Sub(p.CreationTimestamp.Time)
	if waited >= b.cfg.ScheduleTimeout {
		return backend.Errorf(backend.ErrNoCapacity, "launch", "Unschedulable",
			"no node took runner Pod %s in %s: %s", p.Name, b.cfg.ScheduleTimeout, cond.Message)
	}
	if neverFits(cond.Message) && !b.poolAllows(p) {
		return backend.Errorf(backend.ErrNoCapacity, "launch", "Unschedulable",
			"no node of the cluster can take runner Pod %s and no NodePool brings one: %s", p.Name, cond.Message)
	}
	return nil
}

// poolAllows reports whether a Karpenter NodePool allows the Pod's type,
// as of the last scan.
func (b *Backend) poolAllows(p *corev1.Pod) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.pools[typeKey{Type: p.Annotations[keyType], Spot: p.Annotations[keySpot] == "true"}]
}

// failedScheduling is the scheduler's summary: "0/3 nodes are available:
// 1 Insufficient cpu, 2 node(s) didn't match Pod's node affinity/selector.
// preemption: …".
var failedScheduling = regexp.MustCompile(`^0/(\d+) nodes are available(?:: (.*?))?\.?(?: preemption:.*)?$`)

// neverFits reports whether a scheduler message rules every node out for
// good: by the Pod's node selector or affinity, or an untolerated taint,
// not by resources in use (which free up) or a cordon (which ends).
func neverFits(msg string) bool {
	m := failedScheduling.FindStringSubmatch(strings.TrimSpace(msg))
	if m == nil {
		return false
	}
	if m[1] == "0" {
		return true // no nodes at all
	}
	for _, reason := range strings.Split(m[2], ", ") {
		switch {
		case strings.Contains(reason, "didn't match Pod's node affinity/selector"),
			strings.Contains(reason, "didn't match node selector"),
			strings.Contains(reason, "untolerated taint"):
		default:
			return false
		}
	}
	return true
}

// Terminate deletes the Pods with the given names (their Secrets go with
// them), each with its grace period. A Pod already gone is no error.
func (b *Backend) Terminate(ctx context.Context, cloudIDs []string) error {
	var errs []error
	for _, id := range cloudIDs {
		if len(validation.IsDNS1123Subdomain(id)) > 0 {
			continue // no Pod has such a name
		}
		if err := b.deletePod(ctx, id); err != nil {
			errs = append(errs, fmt.Errorf("pod %s: %w", podRef(b.cfg.Namespace, id), err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return classify("terminate", err)
	}
	return nil
}

func (b *Backend) deletePod(ctx context.Context, name string) error {
	err := b.client.CoreV1().Pods(b.cfg.Namespace).Delete(ctx, name, metav1.DeleteOptions{
		PropagationPolicy: ptr.To(metav1.DeletePropagationBackground),
	})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}
