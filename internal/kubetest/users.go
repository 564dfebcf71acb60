package kubetest

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// UserKubeconfig makes a new user, with a client certificate signed by the
// cluster's CA, allowed exactly rules in namespace (a Role and RoleBinding)
// and clusterRules cluster-wide (a ClusterRole and ClusterRoleBinding), and
// writes a kubeconfig for it whose context, "kubetest", has namespace as its
// namespace. The namespace must exist when rules is not empty. It returns the
// kubeconfig's path once the API server enforces the bindings.
func (c *Cluster) UserKubeconfig(t testing.TB, namespace string, rules, clusterRules []rbacv1.PolicyRule) string {
	t.Helper()
	ctx := context.Background()
	c.mu.Lock()
	c.users++
	user := fmt.Sprintf("kubetest-user-%d", c.users)
	c.mu.Unlock()

	kp, err := newClientCert(c.ca, user)
	if err != nil {
		t.Fatal(err)
	}
	key, err := keyPEM(kp.key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(c.dir, user+".kubeconfig")
	if err := writeKubeconfig(path, c.Server, c.caPEM, certPEM(kp.cert), key, namespace); err != nil {
		t.Fatal(err)
	}
	subject := []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}}
	rbac := c.Client.RbacV1()
	if len(rules) > 0 {
		_, err := rbac.Roles(namespace).Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: user}, Rules: rules}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("kubetest: create role %s/%s: %v", namespace, user, err)
		}
		_, err = rbac.RoleBindings(namespace).Create(ctx, &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: user},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: user},
			Subjects:   subject,
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("kubetest: create role binding %s/%s: %v", namespace, user, err)
		}
	}
	if len(clusterRules) > 0 {
		_, err := rbac.ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: user}, Rules: clusterRules}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("kubetest: create cluster role %s: %v", user, err)
		}
		_, err = rbac.ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: user},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: user},
			Subjects:   subject,
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("kubetest: create cluster role binding %s: %v", user, err)
		}
	}

	// The RBAC authorizer reads bindings from its informers: wait until it
	// allows the user the first verb of each rule, so that a test's first
	// request is judged by the rules it gave.
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		t.Fatal(err)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var checks []authorizationv1.ResourceAttributes
	for _, r := range rules {
		if a, ok := firstAttributes(r, namespace); ok {
			checks = append(checks, a)
		}
	}
	for _, r := range clusterRules {
		if a, ok := firstAttributes(r, ""); ok {
			checks = append(checks, a)
		}
	}
	for _, a := range checks {
		err := c.poll(ctx, 10*time.Second, func(ctx context.Context) (bool, error) {
			r, err := client.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
				Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &a},
			}, metav1.CreateOptions{})
			if err != nil {
				return false, err
			}
			return r.Status.Allowed, nil
		})
		if err != nil {
			t.Fatalf("kubetest: user %s is still not allowed %+v: %v", user, a, err)
		}
	}
	return path
}

// firstAttributes is the request a rule's first verb, group and resource
// make; false for rules of non-resource URLs or with a resource names list.
func firstAttributes(r rbacv1.PolicyRule, namespace string) (authorizationv1.ResourceAttributes, bool) {
	if len(r.Verbs) == 0 || len(r.APIGroups) == 0 || len(r.Resources) == 0 || len(r.ResourceNames) > 0 {
		return authorizationv1.ResourceAttributes{}, false
	}
	a := authorizationv1.ResourceAttributes{Namespace: namespace, Verb: r.Verbs[0], Group: r.APIGroups[0], Resource: r.Resources[0]}
	if res, sub, ok := strings.Cut(a.Resource, "/"); ok {
		a.Resource, a.Subresource = res, sub
	}
	return a, true
}
