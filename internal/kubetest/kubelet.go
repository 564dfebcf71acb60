package kubetest

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// PauseImage is the sandbox image of kubelet nodes, made FROM scratch with
// the pause binary scripts/kube.sh builds, and imported, not pulled.
const PauseImage = "docker.io/kubetest/pause:1"

// KubeletNode is a node run by a real kubelet and its own containerd on this
// host: its Pods run real containers (runc, overlayfs, a CNI bridge).
type KubeletNode struct {
	Name string
	// Socket is its containerd's address.
	Socket string
	dir    string
}

// cniDirs are where Debian and the upstream tarball put the CNI plugins.
var cniDirs = []string{"/usr/lib/cni", "/opt/cni/bin"}

// kubeletPrereqs returns the CNI plugin folder, or why a kubelet node cannot
// run here.
func kubeletPrereqs() (string, error) {
	if os.Geteuid() != 0 {
		return "", fmt.Errorf("a kubelet node needs root (containerd, runc and the kubelet's cgroups); this is uid %d", os.Geteuid())
	}
	for _, b := range []string{"containerd", "containerd-shim-runc-v2", "ctr", "runc"} {
		if _, err := exec.LookPath(b); err != nil {
			return "", fmt.Errorf("a kubelet node needs %s: install Debian's containerd package (scripts/kube.sh does, as root)", b)
		}
	}
	for _, b := range []string{"kubelet", "pause"} {
		if _, err := os.Stat(filepath.Join(BinDir(), b)); err != nil {
			return "", fmt.Errorf("a kubelet node needs %s in %s: run scripts/kube.sh", b, BinDir())
		}
	}
	for _, d := range cniDirs {
		if _, err := os.Stat(filepath.Join(d, "bridge")); err == nil {
			return d, nil
		}
	}
	return "", fmt.Errorf("a kubelet node needs the CNI plugins in %s: install Debian's containernetworking-plugins (scripts/kube.sh does, as root)", strings.Join(cniDirs, " or "))
}

// AddKubeletNode starts containerd and a real kubelet that registers as node
// name with labels, and waits until the node is Ready. It skips the test
// when this host cannot run one (not root, no containerd, runc or CNI
// plugins), saying why. The kubelet authenticates as the admin. When the
// test ends, the node's Pods are deleted, then every process of the node is
// stopped and its cgroups, mounts and bridge removed.
//
// What it needs of the host, found on a Firecracker VM without
// CAP_SYS_RESOURCE on cgroup v1: containerd's restrict_oom_score_adj (runc
// cannot lower a sandbox's oom_score_adj without CAP_SYS_RESOURCE) and the
// kubelet's failCgroupV1=false.
func (c *Cluster) AddKubeletNode(t testing.TB, name string, labels map[string]string) *KubeletNode {
	t.Helper()
	cniBin, err := kubeletPrereqs()
	if err != nil {
		t.Skip("kubetest: " + err.Error())
	}
	idb := make([]byte, 3)
	_, _ = rand.Read(idb)
	id := hex.EncodeToString(idb)
	// A short folder: containerd's socket path must fit in 108 bytes.
	dir, err := os.MkdirTemp("", "ktn")
	if err != nil {
		t.Fatal(err)
	}
	n := &KubeletNode{Name: name, Socket: filepath.Join(dir, "containerd.sock"), dir: dir}
	bridge := "kt" + id
	cgroupRoot := "/kubetest-" + id
	var containerd, kubelet *proc
	t.Cleanup(func() {
		c.stopKubeletNode(t, n, kubelet, containerd, bridge, cgroupRoot)
	})

	// CNI: a bridge of its own, with a /24 picked at random in 10.100/14.
	subnet := fmt.Sprintf("10.%d.%d.0/24", 100+int(idb[0])%4, idb[1])
	cniConf := filepath.Join(dir, "cni")
	if err := os.MkdirAll(cniConf, 0o755); err != nil {
		t.Fatal(err)
	}
	conflist := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"kubetest-%s","plugins":[{"type":"bridge","bridge":%q,"isGateway":true,"ipMasq":false,"ipam":{"type":"host-local","dataDir":%q,"ranges":[[{"subnet":%q}]],"routes":[{"dst":"0.0.0.0/0"}]}}]}`,
		id, bridge, filepath.Join(dir, "ipam"), subnet)
	if err := os.WriteFile(filepath.Join(cniConf, "10-bridge.conflist"), []byte(conflist), 0o644); err != nil {
		t.Fatal(err)
	}

	config := fmt.Sprintf(`version = 2
root = %q
state = %q
[grpc]
  address = %q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %q
    conf_dir = %q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), n.Socket, PauseImage, cniBin, cniConf)
	if err := os.WriteFile(filepath.Join(dir, "containerd.toml"), []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	containerdPath, _ := exec.LookPath("containerd")
	containerd, err = startProc(dir, containerdPath, "containerd", "--config="+filepath.Join(dir, "containerd.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.poll(context.Background(), 30*time.Second, func(context.Context) (bool, error) {
		if err := containerd.exited(); err != nil {
			return false, err
		}
		return exec.Command("ctr", "-a", n.Socket, "version").Run() == nil, nil //nolint:noctx // a short local call
	}); err != nil {
		t.Fatalf("kubetest: containerd did not answer: %v\n%s", err, containerd.tail(20))
	}
	pauseTar := filepath.Join(dir, "pause.tar")
	if err := WriteImage(pauseTar, PauseImage, map[string]string{"/pause": filepath.Join(BinDir(), "pause")}, []string{"/pause"}); err != nil {
		t.Fatal(err)
	}
	n.ImportImage(t, pauseTar)

	// The kubelet's cgroups live under a root of their own, so that two
	// kubelets on this host do not take each other's Pods for orphans.
	for _, h := range cgroupHierarchies() {
		if err := os.MkdirAll(filepath.Join(h, cgroupRoot), 0o755); err != nil {
			t.Fatalf("kubetest: cgroup %s: %v", filepath.Join(h, cgroupRoot), err)
		}
	}
	port := freePort()
	kubeletConfig := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: %q
containerRuntimeEndpoint: unix://%s
podLogsDir: %q
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
port: %d
readOnlyPort: 0
healthzPort: 0
failSwapOn: false
resolvConf: /etc/resolv.conf
evictionHard: {memory.available: 50Mi, nodefs.available: 1%%, imagefs.available: 1%%}
`, cgroupRoot, n.Socket, filepath.Join(dir, "pod-logs"), port)
	if err := os.WriteFile(filepath.Join(dir, "kubelet.yaml"), []byte(kubeletConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{
		"--kubeconfig=" + c.Kubeconfig,
		"--config=" + filepath.Join(dir, "kubelet.yaml"),
		"--root-dir=" + filepath.Join(dir, "kubelet"),
		"--cert-dir=" + filepath.Join(dir, "kubelet-pki"),
		"--hostname-override=" + name,
	}
	if len(labels) > 0 {
		var kv []string
		for k, v := range labels {
			kv = append(kv, k+"="+v)
		}
		sort.Strings(kv)
		args = append(args, "--node-labels="+strings.Join(kv, ","))
	}
	kubelet, err = startProc(dir, filepath.Join(BinDir(), "kubelet"), "kubelet", args...)
	if err != nil {
		t.Fatal(err)
	}
	var node *corev1.Node
	if err := c.poll(context.Background(), 90*time.Second, func(ctx context.Context) (bool, error) {
		if err := kubelet.exited(); err != nil {
			return false, err
		}
		node, err = c.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		return err == nil && nodeSchedulable(node), nil
	}); err != nil {
		t.Fatalf("kubetest: kubelet node %s not Ready: %v\n%s", name, err, kubelet.tail(30))
	}
	return n
}

// ImportImage imports a `docker save` (or OCI) tarball into the node's
// containerd, for Pods whose imagePullPolicy is Never or IfNotPresent:
// nothing is pulled from a registry here.
func (n *KubeletNode) ImportImage(t testing.TB, tarball string) {
	t.Helper()
	out, err := exec.Command("ctr", "-a", n.Socket, "-n", "k8s.io", "images", "import", tarball).CombinedOutput() //nolint:noctx // a short local call
	if err != nil {
		t.Fatalf("kubetest: import %s into node %s: %v\n%s", tarball, n.Name, err, out)
	}
}

// stopKubeletNode deletes the node's Pods through the kubelet, then stops
// everything the node started and removes what it left on the host.
func (c *Cluster) stopKubeletNode(t testing.TB, n *KubeletNode, kubelet, containerd *proc, bridge, cgroupRoot string) {
	ctx := context.Background()
	if kubelet != nil && kubelet.exited() == nil {
		pods, err := c.Client.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + n.Name})
		if err == nil {
			grace := int64(1)
			for _, p := range pods.Items {
				_ = c.Client.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: &grace})
			}
			_ = c.poll(ctx, 30*time.Second, func(ctx context.Context) (bool, error) {
				left, err := c.Client.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + n.Name})
				return err == nil && len(left.Items) == 0, nil
			})
		}
		kubelet.stop()
	}
	// Whatever still runs in the node's cgroups: its containers.
	hs := cgroupHierarchies()
	for _, h := range hs {
		killCgroupTree(filepath.Join(h, cgroupRoot))
	}
	if containerd != nil {
		containerd.stop()
	}
	// The runc shims outlive containerd: they are told its address.
	killByCmdline(n.Socket)
	unmountUnder(n.dir)
	if bridge != "" {
		_ = exec.Command("ip", "link", "del", bridge).Run() //nolint:noctx // a short local call
	}
	for _, h := range hs {
		removeCgroupTree(filepath.Join(h, cgroupRoot))
	}
	if t.Failed() {
		for _, p := range []*proc{containerd, kubelet} {
			if p != nil {
				t.Logf("kubetest: the last lines of node %s's %s log:\n%s", n.Name, p.name, p.tail(40))
			}
		}
	}
	if err := os.RemoveAll(n.dir); err != nil {
		t.Logf("kubetest: remove %s: %v", n.dir, err)
	}
}

// cgroupHierarchies are the cgroup mounts: each v1 hierarchy's (named ones
// such as name=systemd included: the kubelet checks them all), and the v2
// tree.
func cgroupHierarchies() []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var hs []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS ... - FSTYPE SOURCE SUPEROPTS
		fields := strings.Fields(s.Text())
		sep := -1
		for i, f := range fields {
			if f == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+1 >= len(fields) {
			continue
		}
		switch fields[sep+1] {
		case "cgroup", "cgroup2":
			hs = append(hs, fields[4])
		}
	}
	return hs
}

// killCgroupTree SIGKILLs every process in the cgroup and below.
func killCgroupTree(root string) {
	for _, d := range cgroupDirs(root) {
		b, err := os.ReadFile(filepath.Join(d, "cgroup.procs"))
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil && pid > 0 {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
}

// cgroupDirs are the cgroup and those below it, deepest first.
func cgroupDirs(root string) []string {
	var dirs []string
	_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
	return dirs
}

// removeCgroupTree removes the cgroup and those below it, deepest first,
// waiting a little for killed processes to leave them.
func removeCgroupTree(root string) {
	for _, d := range cgroupDirs(root) {
		for range 50 {
			if err := syscall.Rmdir(d); err == nil || os.IsNotExist(err) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// killByCmdline SIGKILLs the processes whose command line holds s.
func killByCmdline(s string) {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if strings.Contains(string(b), s) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// unmountUnder detaches every mount under dir, deepest first.
func unmountUnder(dir string) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var points []string
	for _, line := range strings.Split(string(b), "\n") {
		fields := strings.Fields(line)
		if len(fields) > 4 && (fields[4] == dir || strings.HasPrefix(fields[4], dir+"/")) {
			points = append(points, fields[4])
		}
	}
	sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
	for _, p := range points {
		_ = syscall.Unmount(p, syscall.MNT_DETACH)
	}
}
