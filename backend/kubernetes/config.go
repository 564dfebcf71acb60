package kubernetes

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Name is the backend's name, in offers and limits.
const Name = "kubernetes"

// Defaults of Config's zero fields.
const (
	DefaultNamespace       = "dstack"
	DefaultScheduleTimeout = 5 * time.Minute
	// DefaultImage is the runner Pod's image when no RunnerImage is given:
	// the runner is downloaded from the server at start (curl, wget or
	// python3 fetch it), and jobs run in this image.
	DefaultImage = "python:3.12-slim"
	// InClusterRegion is the region of a backend that runs in the cluster
	// it launches in (Config.InCluster).
	InClusterRegion = "in-cluster"
	// DefaultReserveMilliCPU and DefaultReserveMemoryMiB are what a runner
	// Pod leaves of its node's allocatable resources, for the node's
	// daemons (log shippers, CNI, device plugins).
	DefaultReserveMilliCPU  = 100
	DefaultReserveMemoryMiB = 256
)

// Config configures the backend. Its String, GoString, Format and LogValue
// never show the kubeconfig, which holds credentials.
type Config struct {
	// Kubeconfig is the kubeconfig file's content; sealed at rest by the
	// server. Empty with InCluster.
	Kubeconfig []byte
	// Context is the kubeconfig context to use; empty means its current
	// context. It is the backend's region.
	Context string
	// Namespace is where runner Pods and their Secrets go; DefaultNamespace
	// when empty.
	Namespace string
	// InCluster uses the Pod's service account (the server runs in the
	// cluster); the region is InClusterRegion.
	InCluster bool
	// RunnerImage is an image with dstack-runner on its PATH; the runner
	// Pod runs it. Empty means Image, with the runner downloaded from the
	// server's /runner/download at start.
	RunnerImage string
	// Image is the runner Pod's image when RunnerImage is empty;
	// DefaultImage when both are.
	Image string
	// ScheduleTimeout is how long a runner Pod may stay unschedulable before
	// its launch counts as refused for capacity; DefaultScheduleTimeout
	// when zero.
	ScheduleTimeout time.Duration
	// ReserveMilliCPU and ReserveMemoryMiB are kept back of each node's
	// allocatable resources: a runner Pod requests the rest. Negative means
	// none; zero means the defaults.
	ReserveMilliCPU  int64
	ReserveMemoryMiB int64
	// Tolerations are added to every runner Pod, beside the one for
	// nvidia.com/gpu taints (for nodes tainted for dstack's use).
	Tolerations []corev1.Toleration

	// REST, when set, is used instead of Kubeconfig and InCluster (tests).
	REST *rest.Config
	// RESTName is the region of a backend made with REST; "rest" when empty.
	RESTName string
	// OnGone is called (in a goroutine of the backend's watch) when one of
	// the server's runner Pods is evicted, deleted, fails or is found
	// unschedulable for good, so that the server reconciles at once. May be
	// nil.
	OnGone func()
	// Logger receives the backend's records; nothing is logged when nil.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

func (c *Config) applyDefaults() {
	if c.Namespace == "" {
		c.Namespace = DefaultNamespace
	}
	if c.ScheduleTimeout == 0 {
		c.ScheduleTimeout = DefaultScheduleTimeout
	}
	if c.Image == "" {
		c.Image = DefaultImage
	}
	switch {
	case c.ReserveMilliCPU == 0:
		c.ReserveMilliCPU = DefaultReserveMilliCPU
	case c.ReserveMilliCPU < 0:
		c.ReserveMilliCPU = 0
	}
	switch {
	case c.ReserveMemoryMiB == 0:
		c.ReserveMemoryMiB = DefaultReserveMemoryMiB
	case c.ReserveMemoryMiB < 0:
		c.ReserveMemoryMiB = 0
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Validate says what is wrong with c, in words a user can act on.
func (c Config) Validate() error {
	var errs []error
	switch {
	case c.REST != nil:
	case c.InCluster && len(c.Kubeconfig) > 0:
		errs = append(errs, errors.New("kubernetes: give either a kubeconfig or --in-cluster, not both"))
	case !c.InCluster && len(c.Kubeconfig) == 0:
		errs = append(errs, errors.New("kubernetes: no kubeconfig: give one with `dstack kubernetes config --kubeconfig FILE`, or --in-cluster when the server runs in the cluster"))
	}
	if c.Namespace != "" {
		if msgs := validation.IsDNS1123Label(c.Namespace); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("kubernetes: namespace %q: %s", c.Namespace, strings.Join(msgs, "; ")))
		}
	}
	if c.ScheduleTimeout < 0 {
		errs = append(errs, errors.New("kubernetes: the schedule timeout must not be negative"))
	}
	return errors.Join(errs...)
}

// Region is the backend's one region: the kubeconfig context's name, or
// InClusterRegion.
func (c Config) Region() string {
	switch {
	case c.REST != nil:
		if c.RESTName != "" {
			return c.RESTName
		}
		return "rest"
	case c.InCluster:
		return InClusterRegion
	case c.Context != "":
		return c.Context
	}
	if kc, err := clientcmd.Load(c.Kubeconfig); err == nil {
		return kc.CurrentContext
	}
	return ""
}

// restConfig is the client configuration c names. A context the
// kubeconfig lacks is an error that lists those it has.
func (c Config) restConfig() (*rest.Config, error) {
	var rc *rest.Config
	switch {
	case c.REST != nil:
		rc = rest.CopyConfig(c.REST)
	case c.InCluster:
		var err error
		if rc, err = rest.InClusterConfig(); err != nil {
			return nil, fmt.Errorf("kubernetes: in-cluster configuration: %w (is the server running in a Pod with a service account?)", err)
		}
	default:
		kc, err := clientcmd.Load(c.Kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("kubernetes: the kubeconfig cannot be read: %w", err)
		}
		name := c.Context
		if name == "" {
			name = kc.CurrentContext
		}
		if name == "" {
			return nil, fmt.Errorf("kubernetes: the kubeconfig has no current context: choose one with --context (it has %s)", contextNames(kc.Contexts))
		}
		if _, ok := kc.Contexts[name]; !ok {
			return nil, fmt.Errorf("kubernetes: the kubeconfig has no context %q: it has %s", name, contextNames(kc.Contexts))
		}
		rc, err = clientcmd.NewNonInteractiveClientConfig(*kc, name, &clientcmd.ConfigOverrides{}, nil).ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("kubernetes: context %q: %w", name, err)
		}
	}
	// The backend paces itself on the server's answers (ErrThrottled), not
	// on client-go's default of 5 requests a second.
	rc.QPS, rc.Burst = 50, 100
	rc.UserAgent = "dstack-server"
	return rc, nil
}

func contextNames[V any](m map[string]V) string {
	if len(m) == 0 {
		return "none"
	}
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

// String shows c without the kubeconfig.
func (c Config) String() string {
	return fmt.Sprintf("kubernetes.Config{Kubeconfig: %s, Context: %q, Namespace: %q, InCluster: %v, RunnerImage: %q, Image: %q, ScheduleTimeout: %s}",
		c.masked(), c.Context, c.Namespace, c.InCluster, c.RunnerImage, c.Image, c.ScheduleTimeout)
}

func (c Config) masked() string {
	if len(c.Kubeconfig) == 0 {
		return `""`
	}
	return `"****"`
}

// GoString is String, for %#v.
func (c Config) GoString() string { return c.String() }

// Format prints String for every verb, so that no verb prints the fields.
func (c Config) Format(f fmt.State, _ rune) { fmt.Fprint(f, c.String()) }

// LogValue is c without the kubeconfig, for slog.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("context", c.Context),
		slog.String("namespace", c.Namespace),
		slog.Bool("in_cluster", c.InCluster),
		slog.String("runner_image", c.RunnerImage),
	)
}
