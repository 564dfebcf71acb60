package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/backend"
	kubebackend "github.com/dstackai/dstack/backend/kubernetes"
	"github.com/dstackai/dstack/internal/secretbox"
	"github.com/dstackai/dstack/store"
)

// The Kubernetes backend is configured at run time with `dstack kubernetes
// config` (PUT /kubernetes): one cluster per server. The kubeconfig (its
// credentials) is sealed under the server's key like the AWS secret and
// never shown again; replicas sharing a database follow changes within
// awsSyncEvery, as for AWS.

// KubernetesOptions are the server's own settings of the Kubernetes
// backend (flags, not the stored configuration).
type KubernetesOptions struct {
	// ScheduleTimeout is how long a runner Pod may stay unschedulable
	// before its launch counts as refused for capacity (--k8s-schedule-timeout);
	// a configuration's own timeout, when given, wins. Zero: 5 minutes.
	ScheduleTimeout time.Duration
	// Disabled turns the Kubernetes backend off.
	Disabled bool
}

func (o KubernetesOptions) validate() error {
	if o.ScheduleTimeout < 0 {
		return errors.New("--k8s-schedule-timeout must not be negative")
	}
	return nil
}

const (
	kubeName = kubebackend.Name
	// settingKubernetes is the store setting holding the sealed
	// configuration.
	settingKubernetes = "kubernetes"
	// kubePurpose binds the sealed value to its use (see secretbox).
	kubePurpose = "kubernetes-config"
)

// kubeStored is the sealed configuration.
type kubeStored struct {
	Kubeconfig             []byte    `json:"kubeconfig,omitempty"`
	Context                string    `json:"context,omitempty"`
	Namespace              string    `json:"namespace"`
	InCluster              bool      `json:"in_cluster,omitempty"`
	RunnerImage            string    `json:"runner_image,omitempty"`
	ScheduleTimeoutSeconds int       `json:"schedule_timeout_seconds,omitempty"`
	ReserveMilliCPU        int64     `json:"reserve_millicpu,omitempty"`
	ReserveMemoryMiB       int64     `json:"reserve_memory_mib,omitempty"`
	UpdatedAt              time.Time `json:"updated_at"`
	UpdatedBy              string    `json:"updated_by"`
}

// String never shows the kubeconfig.
func (c *kubeStored) String() string {
	return fmt.Sprintf("kubernetes config %s/%s", c.Context, c.Namespace)
}

func (c *kubeStored) config(o KubernetesOptions) kubebackend.Config {
	timeout := o.ScheduleTimeout
	if c.ScheduleTimeoutSeconds > 0 {
		timeout = time.Duration(c.ScheduleTimeoutSeconds) * time.Second
	}
	return kubebackend.Config{
		Kubeconfig: c.Kubeconfig, Context: c.Context, Namespace: c.Namespace, InCluster: c.InCluster,
		RunnerImage: c.RunnerImage, ScheduleTimeout: timeout,
		ReserveMilliCPU: c.ReserveMilliCPU, ReserveMemoryMiB: c.ReserveMemoryMiB,
	}
}

// view is c for the API, without the kubeconfig.
func (c *kubeStored) view(o KubernetesOptions, types string) *api.KubernetesConfig {
	if c == nil {
		return &api.KubernetesConfig{Configured: false}
	}
	cfg := c.config(o)
	t := c.UpdatedAt.UTC()
	v := &api.KubernetesConfig{
		Configured: true, Context: cfg.Region(), Namespace: c.Namespace, InCluster: c.InCluster, RunnerImage: c.RunnerImage,
		ScheduleTimeoutSeconds: int(cmpDuration(cfg.ScheduleTimeout, kubebackend.DefaultScheduleTimeout) / time.Second),
		InstanceTypes:          types, UpdatedAt: &t, UpdatedBy: c.UpdatedBy,
		ReserveMilliCPU:  reserve(c.ReserveMilliCPU, kubebackend.DefaultReserveMilliCPU),
		ReserveMemoryMiB: reserve(c.ReserveMemoryMiB, kubebackend.DefaultReserveMemoryMiB),
	}
	if kc, err := clientcmd.Load(c.Kubeconfig); err == nil && !c.InCluster {
		if ctx, ok := kc.Contexts[v.Context]; ok {
			if cl, ok := kc.Clusters[ctx.Cluster]; ok {
				v.Server = cl.Server
			}
		}
	}
	return v
}

// reserve is a configured reserve as it applies: 0 the default, negative
// none.
func reserve(v, def int64) int64 {
	switch {
	case v == 0:
		return def
	case v < 0:
		return 0
	}
	return v
}

func cmpDuration(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// kubeState is the configuration in use.
type kubeState struct {
	change sync.Mutex // serialises PUT, DELETE and the sync

	mu     sync.Mutex
	cfg    *kubeStored
	sealed string
	b      *kubebackend.Backend
}

func (k *kubeState) current() (*kubeStored, *kubebackend.Backend) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.cfg, k.b
}

// set records the configuration in use and closes the backend it
// replaces.
func (k *kubeState) set(cfg *kubeStored, sealed string, b *kubebackend.Backend) {
	k.mu.Lock()
	old := k.b
	k.cfg, k.sealed, k.b = cfg, sealed, b
	k.mu.Unlock()
	if old != nil && old != b {
		old.Close()
	}
}

func (s *Server) kubeRoutes(rt *router) {
	p := api.PathPrefix
	rt.member("GET "+p+"/kubernetes", s.handleKubeGet)
	rt.admin("PUT "+p+"/kubernetes", "change the server's Kubernetes cluster", s.handleKubePut)
	rt.admin("DELETE "+p+"/kubernetes", "change the server's Kubernetes cluster", s.handleKubeDelete)
}

// newKubeBackend builds the backend of c; it makes no call. A runner Pod
// that leaves has the autoscaler reconcile at once, so that the job of an
// evicted Pod is requeued without waiting for the periodic pass.
func (s *Server) newKubeBackend(c *kubeStored) (*kubebackend.Backend, error) {
	cfg := c.config(s.cfg.Kubernetes)
	cfg.Logger = s.log.With("backend", kubeName)
	cfg.Now = s.cfg.Now
	cfg.OnGone = func() {
		if a := s.autoscaler.Load(); a != nil {
			a.ReconcileSoon()
		}
		s.wakeAutoscalerHere()
	}
	return kubebackend.New(cfg)
}

// kubeApplyStored makes the stored configuration the one in use when it
// changed; s.kube.change is held.
func (s *Server) kubeApplyStored(ctx context.Context) error {
	sealed, err := s.store.SettingGet(ctx, settingKubernetes)
	switch {
	case errors.Is(err, store.ErrNotFound):
		sealed = ""
	case err != nil:
		return fmt.Errorf("read the Kubernetes configuration: %w", err)
	}
	s.kube.mu.Lock()
	same := sealed == s.kube.sealed
	s.kube.mu.Unlock()
	if same {
		return nil
	}
	if sealed == "" {
		s.removeBackend(kubeName)
		s.kube.set(nil, "", nil)
		s.log.Info("Kubernetes configuration cleared (by another server replica)")
		return nil
	}
	cfg, err := s.kubeOpen(sealed)
	var b *kubebackend.Backend
	if err == nil {
		b, err = s.newKubeBackend(cfg)
	}
	if err != nil {
		s.log.Error(err.Error())
		s.removeBackend(kubeName)
		s.kube.set(nil, sealed, nil)
		return nil
	}
	s.putBackend(b)
	s.kube.set(cfg, sealed, b)
	s.log.Info("Kubernetes configured: on-demand runners may run in the cluster", "context", b.DefaultRegion(),
		"namespace", cfg.Namespace, "updated_by", cfg.UpdatedBy)
	return nil
}

func (s *Server) kubeOpen(sealed string) (*kubeStored, error) {
	plain, err := s.box.Open(sealed, kubePurpose)
	if err != nil {
		return nil, fmt.Errorf("the stored Kubernetes configuration cannot be decrypted with this server's encryption key (key id %s): "+
			"start the server with %s set to the key it was saved with, or run `dstack kubernetes config` again; "+
			"until then Kubernetes on-demand runners are off", s.box.ID(), secretbox.EnvKey)
	}
	var c kubeStored
	if err := json.Unmarshal(plain, &c); err != nil || (len(c.Kubeconfig) == 0 && !c.InCluster) {
		return nil, errors.New("the stored Kubernetes configuration is damaged: run `dstack kubernetes config` again; until then Kubernetes on-demand runners are off")
	}
	return &c, nil
}

func (s *Server) handleKubeGet(w http.ResponseWriter, r *http.Request, _ *store.User) error {
	cfg, b := s.kube.current()
	types := ""
	if b != nil {
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		if t, err := b.Types(ctx); err == nil {
			types = t
		} else {
			types = "unknown: " + backend.Reason(err)
		}
	}
	writeJSON(w, http.StatusOK, cfg.view(s.cfg.Kubernetes, types))
	return nil
}

var errNotAdminKube = api.Errorf(http.StatusForbidden, api.CodeForbidden,
	"only an admin can change the server's Kubernetes cluster: ask an admin to run `dstack kubernetes config` or `dstack kubernetes clear`")

func (s *Server) handleKubePut(w http.ResponseWriter, r *http.Request, u *store.User) error {
	if !u.Admin {
		return errNotAdminKube
	}
	if s.cfg.Kubernetes.Disabled {
		return invalid("the Kubernetes backend is turned off on this server")
	}
	var req api.KubernetesConfigRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	req.Context, req.Namespace, req.RunnerImage = strings.TrimSpace(req.Context), strings.TrimSpace(req.Namespace), strings.TrimSpace(req.RunnerImage)
	if req.Namespace == "" {
		req.Namespace = kubebackend.DefaultNamespace
	}
	if req.ScheduleTimeoutSeconds < 0 {
		return invalid("schedule_timeout_seconds must not be negative")
	}
	s.kube.change.Lock()
	defer s.kube.change.Unlock()
	ctx := r.Context()
	// No kubeconfig keeps the stored one (and its context when none is
	// given), as an empty AWS secret keeps the stored secret: the Settings
	// page changes the namespace or the runner image without the file.
	if prev, _ := s.kube.current(); req.Kubeconfig == "" && !req.InCluster && prev != nil && !prev.InCluster {
		req.Kubeconfig = string(prev.Kubeconfig)
		req.Context = cmpOr(req.Context, prev.Context)
	}
	cfg := &kubeStored{
		Kubeconfig: []byte(req.Kubeconfig), Context: req.Context, Namespace: req.Namespace, InCluster: req.InCluster,
		RunnerImage: req.RunnerImage, ScheduleTimeoutSeconds: req.ScheduleTimeoutSeconds,
		ReserveMilliCPU: req.ReserveMilliCPU, ReserveMemoryMiB: req.ReserveMemoryMiB,
		UpdatedAt: s.cfg.Now().UTC(), UpdatedBy: u.Name,
	}
	b, err := s.newKubeBackend(cfg)
	if err != nil {
		return invalid("%s; nothing was saved", strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	// Another cluster or namespace would leave the Pods of the one in use
	// unseen: refuse while any runs, as AWS does for another access key.
	prev, _ := s.kube.current()
	if prev != nil && (prev.config(s.cfg.Kubernetes).Region() != b.DefaultRegion() || prev.Namespace != cfg.Namespace) {
		if err := s.kubeInstancesGone(ctx, "`dstack kubernetes config`"); err != nil {
			b.Close()
			return err
		}
	}
	cctx, cancel := context.WithTimeout(ctx, awsCheckTimeout)
	defer cancel()
	if err := b.Check(cctx); err != nil {
		b.Close()
		reason := backend.Reason(err)
		if errors.Is(err, backend.ErrInvalid) {
			return invalid("the Kubernetes cluster refused the configuration: %s; nothing was saved", reason)
		}
		return unavailable(api.CauseCloud, "cannot check the configuration against the Kubernetes API server: %s; nothing was saved: try again", reason)
	}
	cfg.Context = b.DefaultRegion()
	plain, err := json.Marshal(cfg)
	if err != nil {
		b.Close()
		return err
	}
	sealed, err := s.box.Seal(plain, kubePurpose)
	if err != nil {
		b.Close()
		return fmt.Errorf("seal the Kubernetes configuration: %w", err)
	}
	if err := s.store.SettingPut(ctx, store.SettingPutParams{Name: settingKubernetes, Value: sealed}); err != nil {
		b.Close()
		return fmt.Errorf("save the Kubernetes configuration: %w", err)
	}
	s.putBackend(b)
	s.kube.set(cfg, sealed, b)
	s.log.Info("Kubernetes configured", "user", u.Name, "context", cfg.Context, "namespace", cfg.Namespace,
		"in_cluster", cfg.InCluster, "runner_image", cfg.RunnerImage)
	if err := s.audit(r, u, auditKubernetesPut, cfg.Context, map[string]any{
		"namespace": cfg.Namespace, "in_cluster": cfg.InCluster, "runner_image": cfg.RunnerImage,
	}); err != nil {
		return err
	}
	types, _ := b.Types(ctx)
	writeJSON(w, http.StatusOK, cfg.view(s.cfg.Kubernetes, types))
	return nil
}

// kubeInstancesGone refuses (409) while Kubernetes instances are not gone.
func (s *Server) kubeInstancesGone(ctx context.Context, next string) error {
	ins, err := s.store.InstanceList(ctx, store.InstanceListParams{
		Backend: kubeName, States: []store.InstanceState{store.InstanceLaunching, store.InstanceRunning, store.InstanceTerminating},
	})
	if err != nil {
		return fmt.Errorf("list Kubernetes instances: %w", err)
	}
	live := 0
	for _, in := range ins {
		if in.State != store.InstanceTerminating {
			live++
		}
	}
	switch {
	case live > 0:
		what := "are running"
		if live == 1 {
			what = "is running"
		}
		return api.Errorf(http.StatusConflict, api.CodeConflict,
			"%s %s: run `dstack on-demand disable` (or delete the limits) to terminate them, then %s again",
			plural(live, "Kubernetes runner Pod"), what, next)
	case len(ins) > 0:
		return api.Errorf(http.StatusConflict, api.CodeConflict,
			"%s still terminating: wait for %s to end, then %s again", plural(len(ins), "Kubernetes runner Pod is"), pronoun(len(ins)), next)
	}
	return nil
}

func (s *Server) handleKubeDelete(w http.ResponseWriter, r *http.Request, u *store.User) error {
	if !u.Admin {
		return errNotAdminKube
	}
	dry, err := dryRun(r)
	if err != nil {
		return err
	}
	s.kube.change.Lock()
	defer s.kube.change.Unlock()
	ctx := r.Context()
	if err := s.kubeInstancesGone(ctx, "`dstack kubernetes clear`"); err != nil {
		return err
	}
	if dry {
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	if err := s.store.SettingDelete(ctx, settingKubernetes); err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("delete the Kubernetes configuration: %w", err)
	}
	prev, _ := s.kube.current()
	s.removeBackend(kubeName)
	s.kube.set(nil, "", nil)
	target := ""
	if prev != nil {
		target = prev.Context
		s.log.Info("Kubernetes configuration cleared", "user", u.Name, "context", prev.Context)
	}
	if err := s.audit(r, u, auditKubernetesDelete, target, nil); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
