package server_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/backend/kubernetes"
	"github.com/dstackai/dstack/internal/kubetest"
	"github.com/dstackai/dstack/internal/testutil"
	"github.com/dstackai/dstack/runner"
	"github.com/dstackai/dstack/store"
)

// TestKubernetesEndToEnd: against a real API server with kwok nodes, the
// configuration is checked (a wrong context, a missing namespace, a user
// short of RBAC: each refused naming what is missing) and saved sealed; a
// limit of a type the cluster lacks is refused with its types; a pending job
// gets a runner Pod pinned to its type; dstack-runner, started with the
// Pod's command line, environment and token (kwok runs no containers),
// joins and runs the job; `dstack runners` shows backend kubernetes, the
// context as region, the type and the node; clear is refused while the Pod
// runs. Not parallel: the runner reads its node from the environment.
func TestKubernetesEndToEnd(t *testing.T) {
	c := kubetest.Start(t)
	c.AddNode(t, kubetest.Node{Name: "node-std-1", InstanceType: "m5.large", CPU: 2, MemoryMiB: 8192})
	c.AddNode(t, kubetest.Node{Name: "node-gpu-1", InstanceType: "g5.xlarge", CPU: 4, MemoryMiB: 16384, GPUs: 1, GPUProduct: "NVIDIA-A10G"})
	c.Namespace(t, "dstack")
	kc, err := os.ReadFile(c.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	e := setup(t)
	ctx := context.Background()

	refusals := []struct {
		name string
		req  api.KubernetesConfigRequest
		want string
	}{
		{"a wrong context", api.KubernetesConfigRequest{Kubeconfig: string(kc), Context: "prod"}, `no context "prod": it has kubetest`},
		{"a missing namespace", api.KubernetesConfigRequest{Kubeconfig: string(kc), Namespace: "nowhere"}, `namespace "nowhere" does not exist`},
		{"no kubeconfig", api.KubernetesConfigRequest{}, "no kubeconfig"},
	}
	short := c.UserKubeconfig(t, "dstack", []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods", "secrets", "events"}, Verbs: []string{"*"}}}, nil)
	skc, err := os.ReadFile(short)
	if err != nil {
		t.Fatal(err)
	}
	refusals = append(refusals, struct {
		name string
		req  api.KubernetesConfigRequest
		want string
	}{"a user short of RBAC", api.KubernetesConfigRequest{Kubeconfig: string(skc)}, "lacks get pods/log, list nodes (cluster-wide), watch nodes (cluster-wide)"})
	for _, r := range refusals {
		_, err := e.admin.KubernetesPut(ctx, r.req)
		var ae *api.Error
		if !errors.As(err, &ae) || ae.Status != http.StatusBadRequest || !strings.Contains(ae.Message, r.want) {
			t.Errorf("PUT with %s = %v, want 400 saying %q", r.name, err, r.want)
		}
	}
	if _, err := e.srv.Store().SettingGet(ctx, "kubernetes"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a refused configuration was stored: %v", err)
	}

	if _, err := e.admin.KubernetesPut(ctx, api.KubernetesConfigRequest{Kubeconfig: string(kc)}); err != nil {
		t.Fatal(err)
	}
	// Saved again without the kubeconfig (as the Settings page does): the
	// stored one is kept, checked again, with the new settings.
	got, err := e.admin.KubernetesPut(ctx, api.KubernetesConfigRequest{ReserveMilliCPU: 500})
	if err != nil {
		t.Fatalf("PUT without the kubeconfig once one is stored: %v", err)
	}
	if got.Server != c.Server {
		t.Errorf("PUT without the kubeconfig shows API server %q, want the stored kubeconfig's %s", got.Server, c.Server)
	}
	if got.Context != kubetest.ContextName || got.Namespace != "dstack" || !strings.Contains(got.InstanceTypes, "g5.xlarge") ||
		got.ReserveMilliCPU != 500 || got.ReserveMemoryMiB != 256 {
		t.Errorf("PUT = %+v", got)
	}
	sealed, err := e.srv.Store().SettingGet(ctx, "kubernetes")
	if err != nil || strings.Contains(sealed, "client-key-data") || strings.Contains(sealed, "BEGIN") {
		t.Errorf("the stored configuration is not sealed (%v)", err)
	}
	raw := rawGet(t, e, "/api/v1/kubernetes")
	if strings.Contains(raw, "client-key-data") || strings.Contains(raw, "certificate") {
		t.Errorf("GET shows the kubeconfig: %s", raw)
	}

	_, err = e.admin.LimitPut(ctx, api.LimitPutRequest{Region: kubetest.ContextName, InstanceType: "p5.48xlarge", Max: 1}, false)
	var ae *api.Error
	if !errors.As(err, &ae) || !strings.Contains(ae.Message, "m5.large") {
		t.Errorf("a limit of a type the cluster lacks = %v, want a refusal naming the cluster's types", err)
	}
	res, err := e.admin.LimitPut(ctx, api.LimitPutRequest{Region: kubetest.ContextName, InstanceType: "m5.large", Max: 1}, false)
	if err != nil || res.Limit.Backend != kubernetes.Name {
		t.Fatalf("limit = %+v, %v", res, err)
	}

	submitted := time.Now()
	submitIndependentJobs(t, e.admin, e.codeID, 1)
	var pod *corev1.Pod
	testutil.EventuallyWithin(t, time.Minute, "the runner Pod scheduled", func() bool {
		list, err := c.Client.CoreV1().Pods("dstack").List(ctx, metav1.ListOptions{})
		if err != nil || len(list.Items) == 0 || list.Items[0].Spec.NodeName == "" {
			return false
		}
		pod = &list.Items[0]
		return true
	})
	created := pod.CreationTimestamp.Time
	t.Logf("pending job → runner Pod created: %s (second resolution)", created.Sub(submitted.Truncate(time.Second)))
	if pod.Spec.NodeName != "node-std-1" {
		t.Errorf("the Pod runs on %s, want the m5.large node", pod.Spec.NodeName)
	}
	if q := pod.Spec.Containers[0].Resources.Requests[corev1.ResourceCPU]; q.MilliValue() != 1500 {
		t.Errorf("the Pod requests %s CPU, want the node's 2 less the configured reserve of 500m", q.String())
	}

	// Kwok runs no containers: start dstack-runner as the Pod's command
	// would, with its environment and the token from its Secret.
	sec, err := c.Client.CoreV1().Secrets("dstack").Get(ctx, pod.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, ev := range pod.Spec.Containers[0].Env {
		env[ev.Name] = ev.Value
	}
	if env["DSTACK_SERVER"] == "" || !strings.Contains(env["DSTACK_RUNNER_ARGS"], "--executor shell") {
		t.Fatalf("the Pod's environment: %v", env)
	}
	t.Setenv(runner.EnvNodeName, pod.Spec.NodeName)
	dir := t.TempDir()
	r, err := runner.New(runner.Config{
		Server: env["DSTACK_SERVER"], JoinToken: string(sec.Data[kubernetes.SecretKey]), Name: pod.Name,
		DataDir: filepath.Join(dir, "data"), WorkDir: filepath.Join(dir, "work"), Executor: "shell",
	}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	started := time.Now()
	if err := r.Start(rctx); err != nil {
		t.Fatal(err)
	}
	defer r.Stop()
	row := waitRunnerListed(t, e, pod.Name, time.Minute)
	t.Logf("runner started → registered: %s", time.Since(started))
	if row.Backend != kubernetes.Name || row.Region != kubetest.ContextName || row.InstanceType != "m5.large" || row.Hostname != "node-std-1" {
		t.Errorf("runners shows %+v, want backend kubernetes, region kubetest, m5.large on node-std-1", row)
	}
	testutil.EventuallyWithin(t, time.Minute, "the job done", func() bool {
		runs, err := e.admin.RunList(ctx, true)
		return err == nil && len(runs) == 1 && runs[0].Status == api.StatusDone
	})
	err = e.admin.KubernetesDelete(ctx, true)
	if !errors.As(err, &ae) || ae.Status != http.StatusConflict {
		t.Errorf("clear while the Pod runs = %v, want 409", err)
	}
}

func rawGet(t *testing.T, e *apiEnv, path string) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, e.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+e.srv.AdminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// waitRunnerListed waits up to timeout for the runner named name in
// `dstack runners` and returns its row.
func waitRunnerListed(t testing.TB, e *apiEnv, name string, timeout time.Duration) api.Runner {
	t.Helper()
	var row api.Runner
	testutil.EventuallyWithin(t, timeout, "runner "+name+" registered", func() bool {
		rs, err := e.admin.RunnerList(context.Background())
		if err != nil {
			return false
		}
		i := slices.IndexFunc(rs, func(r api.Runner) bool { return r.Name == name })
		if i < 0 {
			return false
		}
		row = rs[i]
		return true
	})
	return row
}
