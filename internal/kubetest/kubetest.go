// Package kubetest starts a real, throwaway Kubernetes control plane for
// tests: etcd, kube-apiserver (TLS, client-certificate authentication, RBAC
// authorization, the default admission plugins, service-account tokens),
// kube-scheduler, kube-controller-manager (namespaces, service accounts,
// garbage collection, node lifecycle, pod GC) and kwok, which plays the
// kubelet of fake nodes (AddNode): a Pod bound to a kwok node goes Running,
// and a deleted one goes away. AddKubeletNode adds a node run by a real
// kubelet and containerd instead, where the host allows (root), whose Pods
// run real containers from images imported without a registry (WriteImage,
// ImportImage).
//
// The binaries come from scripts/kube.sh, which builds them from the Go module
// proxy and caches them outside the repository; DSTACK_KUBE_BIN names another
// folder holding them. Under -short, tests that need them are skipped when they
// are missing; otherwise they fail and say which command builds them.
//
// Each Start is a cluster of its own (its own etcd data, certificates and
// loopback ports), stopped when the test ends, so tests and test binaries that
// run at once do not see each other's nodes or Pods.
package kubetest

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// CacheKey names the folder under ${XDG_CACHE_HOME:-$HOME/.cache}/dstack/kube
// where scripts/kube.sh puts the binaries; the two must agree.
const CacheKey = "v1.37.2-etcdv3.7.4-kwokv0.8.0"

// ContextName is the context of every kubeconfig this package writes.
const ContextName = "kubetest"

// FakeNodeAnnotation marks the nodes kwok manages; AddNode sets it.
const FakeNodeAnnotation = "kwok.x-k8s.io/node"

// Binaries the cluster runs.
var binaries = []string{"etcd", "kube-apiserver", "kube-scheduler", "kube-controller-manager", "kwok"}

// Cluster is a running control plane with kwok nodes.
type Cluster struct {
	// Kubeconfig is the path of an admin kubeconfig (group system:masters),
	// with one context, "kubetest".
	Kubeconfig string
	// Config is the admin's client configuration.
	Config *rest.Config
	// Client is a clientset made from Config.
	Client kubernetes.Interface
	// Server is the API server's URL (https://127.0.0.1:PORT).
	Server string
	// StartupTime is how long Start took, from its call to a cluster whose
	// default service account exists (that is, ready to take Pods).
	StartupTime time.Duration

	dir   string
	ca    *keyPair
	caPEM []byte

	mu    sync.Mutex
	users int
}

// BinDir returns the folder holding the cluster's binaries: DSTACK_KUBE_BIN
// when set, else the cache folder scripts/kube.sh fills.
func BinDir() string {
	if d := os.Getenv("DSTACK_KUBE_BIN"); d != "" {
		return d
	}
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return ""
		}
		cache = filepath.Join(home, ".cache")
	}
	return filepath.Join(cache, "dstack", "kube", CacheKey, "bin")
}

// findBinaries returns the folder with every binary, or why there is none.
func findBinaries() (string, error) {
	dir := BinDir()
	var missing []string
	for _, b := range binaries {
		if fi, err := os.Stat(filepath.Join(dir, b)); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			missing = append(missing, b)
		}
	}
	if len(missing) > 0 {
		how := "run scripts/kube.sh from the repository root (it builds them from the Go module proxy, about 15 minutes the first time)"
		if os.Getenv("DSTACK_KUBE_BIN") != "" {
			how = "set DSTACK_KUBE_BIN to a folder that holds them, or unset it and " + how
		}
		return "", fmt.Errorf("kubetest: %s not found in %s: %s", strings.Join(missing, ", "), dir, how)
	}
	return dir, nil
}

// Start starts a cluster and stops it when the test ends. It skips the test
// under -short when the binaries are missing, and fails it otherwise.
func Start(t testing.TB) *Cluster {
	t.Helper()
	begin := time.Now()
	bin, err := findBinaries()
	if err != nil {
		if testing.Short() {
			t.Skip(err)
		}
		t.Fatal(err)
	}
	c := &Cluster{dir: t.TempDir()}
	var procs []*proc
	t.Cleanup(func() {
		// Stop in the reverse order of start: the API server's clients first,
		// etcd last.
		for i := len(procs) - 1; i >= 0; i-- {
			procs[i].stop()
		}
		if t.Failed() {
			for _, p := range procs {
				t.Logf("kubetest: the last lines of %s's log:\n%s", p.name, p.tail(40))
			}
		}
	})

	pki, err := newPKI(c.dir)
	if err != nil {
		t.Fatalf("kubetest: certificates: %v", err)
	}
	c.ca, c.caPEM = pki.ca, pki.caPEM

	etcd, etcdURL, err := startEtcd(bin, c.dir)
	if err != nil {
		t.Fatal(err)
	}
	procs = append(procs, etcd)

	apiserver, port, err := startAPIServer(bin, c.dir, etcdURL, pki)
	if err != nil {
		t.Fatal(err)
	}
	procs = append(procs, apiserver)
	c.Server = "https://127.0.0.1:" + strconv.Itoa(port)

	c.Kubeconfig = filepath.Join(c.dir, "admin.kubeconfig")
	if err := writeKubeconfig(c.Kubeconfig, c.Server, c.caPEM, pki.adminCertPEM, pki.adminKeyPEM, ""); err != nil {
		t.Fatal(err)
	}
	c.Config = &rest.Config{
		Host: c.Server,
		TLSClientConfig: rest.TLSClientConfig{
			CAData:   c.caPEM,
			CertData: pki.adminCertPEM,
			KeyData:  pki.adminKeyPEM,
		},
		QPS:   200,
		Burst: 400,
	}
	c.Client, err = kubernetes.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	if err := waitReady(c.Config, apiserver); err != nil {
		t.Fatal(err)
	}

	stages := filepath.Join(c.dir, "kwok-stages.yaml")
	if err := os.WriteFile(stages, kwokStages, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []struct {
		name string
		args []string
	}{
		{"kube-controller-manager", []string{
			"--kubeconfig=" + c.Kubeconfig,
			"--leader-elect=false",
			"--secure-port=0",
			"--use-service-account-credentials=false",
			"--service-account-private-key-file=" + pki.saKeyFile,
			"--root-ca-file=" + pki.caFile,
			"--cluster-signing-cert-file=" + pki.caFile,
			"--cluster-signing-key-file=" + pki.caKeyFile,
			// The node lifecycle controller's defaults: a node whose lease
			// is not renewed for 40s is NotReady, its Pods evicted 5m later.
		}},
		{"kube-scheduler", []string{
			"--kubeconfig=" + c.Kubeconfig,
			"--leader-elect=false",
			"--secure-port=0",
		}},
		{"kwok", []string{
			"--kubeconfig=" + c.Kubeconfig,
			"--config=" + stages,
			"--manage-all-nodes=false",
			"--manage-nodes-with-annotation-selector=" + FakeNodeAnnotation + "=fake",
			"--node-lease-duration-seconds=40",
			"--cidr=10.244.0.0/16",
		}},
	} {
		pr, err := startProc(c.dir, filepath.Join(bin, p.name), p.name, p.args...)
		if err != nil {
			t.Fatal(err)
		}
		procs = append(procs, pr)
	}

	// The controller manager makes the default service account of each
	// namespace, without which the ServiceAccount admission plugin refuses
	// Pods; its being there says the controller manager runs.
	if err := c.waitServiceAccount(context.Background(), metav1.NamespaceDefault, procs); err != nil {
		t.Fatal(err)
	}
	c.StartupTime = time.Since(begin)
	return c
}

// Namespace creates a namespace and waits for its default service account,
// so that Pods can be created in it at once.
func (c *Cluster) Namespace(t testing.TB, name string) {
	t.Helper()
	ctx := context.Background()
	_, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("kubetest: create namespace %s: %v", name, err)
	}
	if err := c.waitServiceAccount(ctx, name, nil); err != nil {
		t.Fatal(err)
	}
}

func (c *Cluster) waitServiceAccount(ctx context.Context, ns string, procs []*proc) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	err := wait.PollUntilContextCancel(ctx, 50*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		for _, p := range procs {
			if err := p.exited(); err != nil {
				return false, err
			}
		}
		_, err := c.Client.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
	if err != nil {
		return fmt.Errorf("kubetest: the default service account of namespace %s did not appear (is kube-controller-manager running?): %w", ns, err)
	}
	return nil
}

// waitReady polls the API server's /readyz until it answers 200.
func waitReady(cfg *rest.Config, p *proc) error {
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(90 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		if err := p.exited(); err != nil {
			return err
		}
		resp, err := get(hc, cfg.Host+"/readyz")
		if err == nil {
			body := make([]byte, 4096)
			n, _ := resp.Body.Read(body)
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, body[:n])
		} else {
			last = err.Error()
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("kubetest: kube-apiserver not ready after 90s: %s\n%s", last, p.tail(30))
}

// startEtcd starts etcd on loopback ports and returns its client URL. A port
// taken between its choice and etcd's bind is retried with another.
func startEtcd(bin, dir string) (*proc, string, error) {
	var lastErr error
	for range 5 {
		client, peer, err := freePort(), freePort(), error(nil)
		if client == 0 || peer == 0 {
			return nil, "", errors.New("kubetest: no free loopback port")
		}
		clientURL := fmt.Sprintf("http://127.0.0.1:%d", client)
		peerURL := fmt.Sprintf("http://127.0.0.1:%d", peer)
		data := filepath.Join(dir, "etcd")
		_ = os.RemoveAll(data)
		p, err := startProc(dir, filepath.Join(bin, "etcd"), "etcd",
			"--name=kubetest",
			"--data-dir="+data,
			"--listen-client-urls="+clientURL,
			"--advertise-client-urls="+clientURL,
			"--listen-peer-urls="+peerURL,
			"--initial-advertise-peer-urls="+peerURL,
			"--initial-cluster=kubetest="+peerURL,
			"--listen-metrics-urls=",
			"--unsafe-no-fsync",
			"--quota-backend-bytes=2147483648",
			"--log-level=warn",
		)
		if err != nil {
			return nil, "", err
		}
		if err = waitHTTP(clientURL+"/health", p, 30*time.Second); err == nil {
			return p, clientURL, nil
		}
		p.stop()
		lastErr = err
		if !strings.Contains(p.tail(50), "address already in use") {
			break
		}
	}
	return nil, "", lastErr
}

// startAPIServer starts kube-apiserver and returns its secure port. A port
// taken between its choice and the bind is retried with another.
func startAPIServer(bin, dir, etcdURL string, pki *pki) (*proc, int, error) {
	var lastErr error
	for range 5 {
		port := freePort()
		if port == 0 {
			return nil, 0, errors.New("kubetest: no free loopback port")
		}
		p, err := startProc(dir, filepath.Join(bin, "kube-apiserver"), "kube-apiserver",
			"--etcd-servers="+etcdURL,
			"--bind-address=127.0.0.1",
			"--advertise-address=127.0.0.1",
			// The default, lease, endpoint reconciler refuses a loopback
			// address; nothing here reaches the API server from a Pod.
			"--endpoint-reconciler-type=none",
			"--secure-port="+strconv.Itoa(port),
			"--cert-dir="+filepath.Join(dir, "apiserver-certs"),
			"--tls-cert-file="+pki.servingCertFile,
			"--tls-private-key-file="+pki.servingKeyFile,
			"--client-ca-file="+pki.caFile,
			"--authorization-mode=RBAC",
			"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
			"--service-account-key-file="+pki.saPubFile,
			"--service-account-signing-key-file="+pki.saKeyFile,
			"--service-cluster-ip-range=10.96.0.0/16",
			"--allow-privileged=true",
			// pods/log and exec reach a kubelet by its node's InternalIP:
			// there is no DNS for node names here.
			"--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname",
			"--profiling=false",
		)
		if err != nil {
			return nil, 0, err
		}
		// Wait for the port to listen, or for the process to die.
		deadline := time.Now().Add(60 * time.Second)
		for time.Now().Before(deadline) {
			if err = p.exited(); err != nil {
				break
			}
			d := net.Dialer{Timeout: time.Second}
			conn, derr := d.DialContext(context.Background(), "tcp", "127.0.0.1:"+strconv.Itoa(port))
			if derr == nil {
				_ = conn.Close()
				return p, port, nil
			}
			time.Sleep(50 * time.Millisecond)
		}
		if err == nil {
			err = fmt.Errorf("kubetest: kube-apiserver did not listen on 127.0.0.1:%d within 60s:\n%s", port, p.tail(30))
		}
		p.stop()
		lastErr = err
		if !strings.Contains(p.tail(50), "address already in use") {
			break
		}
	}
	return nil, 0, lastErr
}

func waitHTTP(url string, p *proc, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	hc := &http.Client{Timeout: time.Second}
	for time.Now().Before(deadline) {
		if err := p.exited(); err != nil {
			return err
		}
		resp, err := get(hc, url)
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("kubetest: %s did not answer %s within %s:\n%s", p.name, url, timeout, p.tail(30))
}

// get GETs url within 5s.
func get(hc *http.Client, url string) (*http.Response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	// Read the body before the context ends.
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp, err
}

// freePort returns a loopback TCP port that was free a moment ago, or 0.
func freePort() int {
	var lc net.ListenConfig
	l, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		return 0
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// proc is a child process whose output goes to a log file.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error // set before done is closed
}

func startProc(dir, path, name string, args ...string) (*proc, error) {
	logPath := filepath.Join(dir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	// Not tied to a context: stop ends it, gently first.
	cmd := exec.CommandContext(context.Background(), path, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Dir = dir
	// A test binary killed before its cleanups run must not leave the
	// cluster behind: the kernel kills the child when its parent dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("kubetest: start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		_ = f.Close()
		if err == nil {
			err = errors.New("exited")
		}
		p.err = fmt.Errorf("kubetest: %s stopped: %w\n%s", name, err, p.tail(30))
		close(p.done)
	}()
	return p, nil
}

// exited returns why the process stopped, or nil while it runs.
func (p *proc) exited() error {
	select {
	case <-p.done:
		return p.err
	default:
		return nil
	}
}

// stop asks the process to stop, and kills it after 10s.
func (p *proc) stop() {
	if p.exited() != nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// tail returns the last n lines of the process's log.
func (p *proc) tail(n int) string {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return ""
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// writeKubeconfig writes a kubeconfig with one cluster, user and context, all
// named "kubetest". Either certPEM and keyPEM or token authenticate.
func writeKubeconfig(path, server string, caPEM, certPEM, keyPEM []byte, namespace string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[ContextName] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caPEM}
	cfg.AuthInfos[ContextName] = &clientcmdapi.AuthInfo{ClientCertificateData: certPEM, ClientKeyData: keyPEM}
	cfg.Contexts[ContextName] = &clientcmdapi.Context{Cluster: ContextName, AuthInfo: ContextName, Namespace: namespace}
	cfg.CurrentContext = ContextName
	return clientcmd.WriteToFile(*cfg, path)
}

// kwokStages are the stages kwok plays; see the file's header.
//
//go:embed kwok-stages.yaml
var kwokStages []byte
