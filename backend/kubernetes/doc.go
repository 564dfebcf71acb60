// Package kubernetes is the backend that runs on-demand runners as Pods in
// a user's existing Kubernetes cluster (docs/kubernetes.md): offers are the
// instance types of the cluster's nodes (and of its Karpenter NodePools),
// an instance is a runner Pod pinned to its type and sized to it, with its
// join token in a Secret the Pod owns, labelled with the server's identity.
// A Pod no node takes within the schedule timeout, or that the scheduler
// says no node can ever take, is listed gone with an ErrNoCapacity
// failure; a Pod evicted or deleted is listed gone at once, and a watch on
// the server's Pods tells the server (Config.OnGone) so that it reconciles
// without waiting.
//
// The backend uses client-go against the API server; its tests run against
// a real one (internal/kubetest), never a fake clientset.
package kubernetes
