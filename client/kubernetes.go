package client

import (
	"context"
	"net/http"

	"github.com/dstackai/dstack/api"
)

// The server's Kubernetes cluster (`dstack kubernetes config`): any user
// reads it, never the kubeconfig; only an admin changes it.

// KubernetesGet returns the server's Kubernetes configuration; Configured
// is false when there is none.
func (c *Client) KubernetesGet(ctx context.Context) (*api.KubernetesConfig, error) {
	var out api.KubernetesConfig
	return &out, c.doJSON(ctx, http.MethodGet, "/kubernetes", nil, nil, &out)
}

// KubernetesPut checks the configuration against the cluster's API server
// (context, namespace, RBAC) and, when it passes, saves it.
func (c *Client) KubernetesPut(ctx context.Context, req api.KubernetesConfigRequest) (*api.KubernetesConfig, error) {
	var out api.KubernetesConfig
	return &out, c.doJSON(ctx, http.MethodPut, "/kubernetes", nil, req, &out)
}

// KubernetesDelete clears the server's Kubernetes configuration. The
// server refuses (api.CodeConflict) while runner Pods run. With dryRun it
// only says whether it would refuse.
func (c *Client) KubernetesDelete(ctx context.Context, dryRun bool) error {
	return c.doJSON(ctx, http.MethodDelete, "/kubernetes", dryRunQuery(dryRun), nil, nil)
}
