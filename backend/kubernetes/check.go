package kubernetes

import (
	"context"
	"fmt"
	"strings"

	authv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/dstackai/dstack/backend"
)

// Permission is one RBAC permission the backend needs.
type Permission struct {
	Verb        string
	Resource    string // "pods", "pods/log", "nodes"
	ClusterWide bool   // nodes: granted by a ClusterRole
}

func (p Permission) String() string {
	if p.ClusterWide {
		return p.Verb + " " + p.Resource + " (cluster-wide)"
	}
	return p.Verb + " " + p.Resource
}

// Permissions are what the backend's identity needs: in the namespace,
// pods create/get/list/watch/delete, pods/log get, secrets
// create/get/delete and events list/watch; cluster-wide, nodes list/watch.
// docs/kubernetes-rbac.yaml grants exactly these.
var Permissions = func() []Permission {
	var ps []Permission
	add := func(resource string, cluster bool, verbs ...string) {
		for _, v := range verbs {
			ps = append(ps, Permission{Verb: v, Resource: resource, ClusterWide: cluster})
		}
	}
	add("pods", false, "create", "get", "list", "watch", "delete")
	add("pods/log", false, "get")
	add("secrets", false, "create", "get", "delete")
	add("events", false, "list", "watch")
	add("nodes", true, "list", "watch")
	return ps
}()

// Check proves the configuration against the API server: it reaches the
// server with the context's credentials, the namespace exists (where the
// identity may read namespaces), and every one of Permissions is granted,
// asked with SelfSubjectAccessReview. Whatever is missing is named in one
// *backend.Error of kind ErrInvalid that says what to grant.
func (b *Backend) Check(ctx context.Context) error {
	ns := b.cfg.Namespace
	_, err := b.client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return backend.Errorf(backend.ErrInvalid, "check", "NamespaceNotFound",
			"context %s: the namespace %q does not exist: create it (kubectl create namespace %s) or choose another with --namespace", b.region, ns, ns)
	case apierrors.IsForbidden(err):
		// Reading namespaces is not among the permissions needed.
	case err != nil:
		err = classify("check", err)
		if be, ok := err.(*backend.Error); ok && be.Kind == nil { //nolint:errorlint // classify returns it bare
			be.Kind = backend.ErrInvalid
			be.Reason = fmt.Sprintf("the API server of context %s cannot be reached: %s", b.region, be.Reason)
		}
		return err
	}
	var missing []string
	for _, p := range Permissions {
		attr := &authv1.ResourceAttributes{Verb: p.Verb, Resource: p.Resource}
		if i := strings.IndexByte(p.Resource, '/'); i >= 0 {
			attr.Resource, attr.Subresource = p.Resource[:i], p.Resource[i+1:]
		}
		if !p.ClusterWide {
			attr.Namespace = ns
		}
		rev, err := b.client.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx,
			&authv1.SelfSubjectAccessReview{Spec: authv1.SelfSubjectAccessReviewSpec{ResourceAttributes: attr}}, metav1.CreateOptions{})
		if err != nil {
			return classify("check", err)
		}
		if !rev.Status.Allowed {
			missing = append(missing, p.String())
		}
	}
	if len(missing) > 0 {
		return backend.Errorf(backend.ErrInvalid, "check", "Forbidden",
			"context %s: the kubeconfig's user lacks %s in namespace %q: grant them with a Role and RoleBinding (nodes with a ClusterRole), as docs/kubernetes-rbac.yaml does",
			b.region, strings.Join(missing, ", "), ns)
	}
	if _, err := b.nodeTypes(ctx, true); err != nil {
		return err
	}
	return nil
}

// Types lists the cluster's instance types, spot marked, for messages.
func (b *Backend) Types(ctx context.Context) (string, error) {
	types, err := b.nodeTypes(ctx, false)
	if err != nil {
		return "", err
	}
	return typeNames(types), nil
}
