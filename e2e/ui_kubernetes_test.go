package e2e

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/backend/local"
	"github.com/dstackai/dstack/internal/kubetest"
	"github.com/dstackai/dstack/internal/testutil"
)

// TestUIKubernetes: the Settings page's Kubernetes section against a real
// API server with kwok nodes. The admin's form refuses what the CLI refuses
// (a wrong context, a user short of RBAC: the same words), saves a
// kubeconfig uploaded as a file, shows the cluster (context, API server,
// namespace, runner image, timeout, reserves; never the kubeconfig) and its
// nodes' instance types, keeps the stored kubeconfig when saved without one,
// and adds a limit from an offer's row. A member sees the cluster and its
// offers but no form. A job's runner Pod, run by the Docker "kubelet" of
// kubernetes_pod_test.go, shows on the Runners page as backend kubernetes,
// the context as region, its instance type and its node; Clear is refused
// while it runs, and clears once on-demand runners are disabled.
func TestUIKubernetes(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test: skipped with -short")
	}
	t.Parallel()
	chromiumPath(t)
	docker := dockerEngine(t)
	const (
		ns    = "dstack"
		itype = "m5.large"
	)
	kc := kubetest.Start(t)
	kc.AddNode(t, kubetest.Node{Name: "kwok-m5-1", InstanceType: itype, CPU: 2, MemoryMiB: 2048})
	kc.AddNode(t, kubetest.Node{Name: "kwok-g5-1", InstanceType: "g5.xlarge", CPU: 4, MemoryMiB: 16384, GPUs: 1, GPUProduct: "NVIDIA-A10G"})
	kc.AddNode(t, kubetest.Node{Name: "kwok-c5-spot-1", InstanceType: "c5.xlarge", CPU: 4, MemoryMiB: 8192, Spot: true})
	kc.Namespace(t, ns)
	ctx := context.Background()
	image, err := local.BuildImage(ctx, docker, bins.runner)
	if err != nil {
		t.Fatal(err)
	}
	kl := startDockerKubelet(t, docker, kc.Client, ns)
	gw := dockerGateway(t, docker)
	port := strconv.Itoa(freePort(t))
	// A long idle timeout: the runner Pod stays until on-demand runners are
	// disabled.
	c := newCluster(t, "", "--host", "0.0.0.0", "--port", port, "--external-url", "http://"+gw+":"+port, "--idle-timeout", "1h")
	ok := func(args ...string) result {
		t.Helper()
		r := c.dstack("", args...)
		if r.code != 0 {
			t.Fatalf("%s", r)
		}
		return r
	}
	member := strings.TrimSpace(ok("users", "add", "mia").stdout)
	kubeconfig := readFile(t, kc.Kubeconfig)
	cfg, err := clientcmd.Load([]byte(kubeconfig))
	if err != nil {
		t.Fatal(err)
	}
	var secrets []string
	for _, a := range cfg.AuthInfos {
		secrets = append(secrets, string(a.ClientKeyData), string(a.ClientCertificateData), a.Token)
	}

	b := newBrowser(t, c.URL)
	b.signIn(c.Token)
	b.open("/settings")
	b.wait("the Kubernetes section", `document.querySelector("#kube-status").textContent.startsWith("Not configured") && document.querySelector("#kube-form") !== null`)

	// What the API server refuses, the page shows in the CLI's words.
	save := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		eval[bool](b, `(document.querySelector("#kube-saved").hidden = true, document.querySelector("#kube-error").hidden = true)`)
		b.do(what, append(actions, chromedp.Click(chromedp.CSS("#kube-save")))...)
		b.waitFor(odTimeout, what+": the answer", `!document.querySelector("#kube-error").hidden || !document.querySelector("#kube-saved").hidden`)
	}
	short := kc.UserKubeconfig(t, ns, []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods", "secrets", "events"}, Verbs: []string{"*"}}}, nil)
	for _, tc := range []struct {
		what, kubeconfig, file, context, want string
	}{
		{"a wrong context", kubeconfig, kc.Kubeconfig, "prod", `no context "prod"`},
		{"a user short of RBAC", readFile(t, short), short, "", "lacks get pods/log"},
	} {
		save(tc.what, setValue("#kube-kubeconfig", tc.kubeconfig), setValue("#kube-context-in", tc.context))
		msg := b.text("#kube-error")
		args := []string{"kubernetes", "config", "--kubeconfig", tc.file}
		if tc.context != "" {
			args = append(args, "--context", tc.context)
		}
		cli := c.dstack("", args...)
		if !strings.Contains(msg, tc.want) || cli.code == 0 || !strings.Contains(cli.stderr, msg) {
			t.Errorf("saving %s: the page says %q, want %q as the CLI says it:\n%s", tc.what, msg, tc.want, cli)
		}
	}
	if r := ok("kubernetes", "info"); !strings.Contains(r.stdout, "not configured") {
		t.Errorf("a refused configuration was saved:\n%s", r)
	}

	// The kubeconfig as a file.
	b.do("choose the kubeconfig file", setValue("#kube-kubeconfig", ""), setValue("#kube-context-in", ""),
		chromedp.SetUploadFiles(chromedp.CSS("#kube-file"), []string{kc.Kubeconfig}))
	b.wait("the file read into the form", fmt.Sprintf(`document.querySelector("#kube-kubeconfig").value === %s`, js(kubeconfig)))
	save("save the cluster", setValue("#kube-image-in", image))
	if msg := b.text("#kube-error"); msg != "" {
		t.Fatalf("saving the cluster: %s", msg)
	}
	checkShown := func(who string) {
		t.Helper()
		b.wait(who+": the cluster", `document.querySelector("#kube-status").textContent.startsWith("Configured") && !document.querySelector("#kube-info").hidden`)
		for sel, want := range map[string]string{
			"#kube-context": kubetest.ContextName, "#kube-server": kc.Server, "#kube-namespace": ns,
			"#kube-image": image, "#kube-reserve": "100m CPU, 256 MiB",
		} {
			if got := b.text(sel); got != want {
				t.Errorf("%s: %s shows %q, want %q", who, sel, got, want)
			}
		}
		b.wait(who+": the cluster's instance types", `document.querySelectorAll("#kube-offers tbody tr").length === 3`)
		for _, o := range []struct{ typ, purchase, want string }{
			{itype, "on-demand", "none"}, {"g5.xlarge", "on-demand", "A10G"}, {"c5.xlarge", "spot", "none"},
		} {
			row := fmt.Sprintf(`#kube-offers tr[data-instance-type=%q][data-purchase-type=%q]`, o.typ, o.purchase)
			if got := eval[string](b, fmt.Sprintf(`(document.querySelector(%s + ' td[data-label="GPU"]') || {textContent: "missing"}).textContent`, js(row))); !strings.Contains(got, o.want) {
				t.Errorf("%s: the offer %s (%s) shows GPU %q, want %q", who, o.typ, o.purchase, got, o.want)
			}
		}
		html := eval[string](b, `document.documentElement.outerHTML + document.querySelectorAll("textarea").length + [...document.querySelectorAll("textarea")].map((e) => e.value).join("")`)
		for _, s := range secrets {
			if s != "" && strings.Contains(html, s) {
				t.Errorf("%s: the page holds the kubeconfig's credentials", who)
				break
			}
		}
	}
	checkShown("the admin")
	if got := eval[string](b, `document.querySelector("#kube-kubeconfig").value + "|" + document.querySelector("#kube-kubeconfig").placeholder`); got != "|stored (leave empty to keep)" {
		t.Errorf("the kubeconfig field after saving = %q, want empty, its placeholder saying it is kept", got)
	}
	b.screenshot("settings-kubernetes")

	// Saved without a kubeconfig: the stored one is kept.
	save("a shorter schedule timeout", setValue("#kube-timeout-in", "120"))
	if msg := b.text("#kube-error"); msg != "" {
		t.Fatalf("saving without the kubeconfig: %s", msg)
	}
	if r := ok("kubernetes", "info"); !strings.Contains(r.stdout, "2m0s") || !strings.Contains(r.stdout, kc.Server) || !strings.Contains(r.stdout, image) {
		t.Errorf("after saving the form without a kubeconfig, %s", r)
	}

	// A limit from an offer's row.
	b.click("add a limit of m5.large", fmt.Sprintf(`#kube-offers tr[data-instance-type=%q] button.add-limit`, itype))
	b.wait("the limit form filled in", fmt.Sprintf(`!document.querySelector("#limit-form").hidden && document.querySelector("#limit-region").value === %s && document.querySelector("#limit-type").value === %s`,
		js(kubetest.ContextName), js(itype)))
	b.do("add it", chromedp.Click(chromedp.CSS("#limit-add")))
	b.wait("the limit in the table", fmt.Sprintf(`document.querySelector('#limits tr[data-instance-type=%q]') !== null`, itype))
	if r := ok("on-demand", "limits"); !strings.Contains(r.stdout, kubetest.ContextName) || !strings.Contains(r.stdout, itype) {
		t.Errorf("dstack on-demand limits after adding one from the offers:\n%s", r)
	}

	// A member sees the cluster, not the form.
	b.click("sign out", "#signout")
	b.wait("the login page", `location.pathname === "/login"`)
	b.signIn(member)
	b.open("/settings")
	checkShown("a member")
	if eval[bool](b, `document.querySelector("#kube-form") !== null || document.querySelector("#kube-clear") !== null`) {
		t.Error("a member's Settings page has the Kubernetes form")
	}
	b.screenshot("settings-kubernetes-member")
	b.click("sign out", "#signout")
	b.wait("the login page", `location.pathname === "/login"`)
	b.signIn(c.Token)

	// A job's runner Pod on the Runners page.
	proj := project(t, kubePodProject)
	name := runName(t, c.dstack(proj, "run", "-d", "hello").stdout)
	testutil.EventuallyWithin(t, odTimeout, "run "+name+" to be done", func() bool {
		r := c.run(name)
		if r.Status.Finished() && r.Status != api.StatusDone {
			t.Fatalf("run %s ended %s: %+v", name, r.Status, r.Jobs)
		}
		return r.Status == api.StatusDone
	})
	pods := kl.podsSeen()
	if len(pods) != 1 {
		t.Fatalf("%d runner Pods for one job", len(pods))
	}
	var pod, node string
	for n, p := range pods {
		pod, node = n, p.node
	}
	b.open("/runners")
	row := fmt.Sprintf(`#runners tr[data-runner=%q]`, pod)
	cell := func(label string) string {
		return fmt.Sprintf(`(document.querySelector(%s + ' td[data-label=%q]') || {textContent: ""}).textContent`, js(row), label)
	}
	b.wait("the runner Pod on the Runners page", fmt.Sprintf(`%s === "kubernetes" && %s === %s && %s === %s && %s.includes(%s)`,
		cell("Backend"), cell("Region"), js(kubetest.ContextName), cell("Instance type"), js(itype), cell("Name"), js(node)))
	b.screenshot("runners-kubernetes")
	if r := ok("runners"); !strings.Contains(r.stdout, pod) || !strings.Contains(r.stdout, node) || !strings.Contains(r.stdout, "kubernetes") ||
		!strings.Contains(r.stdout, kubetest.ContextName) || !strings.Contains(r.stdout, itype) {
		t.Errorf("dstack runners does not show the runner Pod %s (kubernetes, %s, %s, node %s):\n%s", pod, kubetest.ContextName, itype, node, r)
	}

	// Clear: refused while the Pod runs, in the CLI's words; done once
	// on-demand runners are disabled and the Pod is gone.
	b.open("/settings")
	b.wait("the Clear button", `!document.querySelector("#kube-clear").hidden`)
	eval[bool](b, `(window.confirms = [], window.confirm = (m) => { window.confirms.push(m); return true; }, true)`)
	b.click("clear while the Pod runs", "#kube-clear")
	b.wait("the refusal", `!document.querySelector("#kube-error").hidden`)
	msg := b.text("#kube-error")
	if cli := c.dstack("", "kubernetes", "clear", "-f"); !strings.Contains(msg, "dstack on-demand disable") || cli.code == 0 || !strings.Contains(cli.stderr, msg) {
		t.Errorf("clear while the Pod runs: the page says %q; the CLI:\n%s", msg, cli)
	}
	if q := eval[string](b, `window.confirms.join("|")`); q != "" {
		t.Errorf("the page asked %q before a refused clear", q)
	}
	ok("on-demand", "disable", "-f")
	testutil.EventuallyWithin(t, odTimeout, "the runner Pod gone", func() bool {
		p, err := kc.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		return err == nil && len(p.Items) == 0
	})
	testutil.EventuallyWithin(t, waitTimeout, "the instance terminated", func() bool {
		for _, r := range c.runners() {
			if r.Backend != "" && r.InstanceState != "terminated" && r.InstanceState != "gone" {
				return false
			}
		}
		return true
	})
	b.click("clear", "#kube-clear")
	b.wait("the cluster cleared", `document.querySelector("#kube-status").textContent.startsWith("Not configured") && document.querySelector("#kube-offers").hidden && document.querySelector("#kube-info").hidden`)
	if q := eval[string](b, `window.confirms.join("|")`); !strings.Contains(q, "Clear the Kubernetes configuration (context "+kubetest.ContextName+")") {
		t.Errorf("the page asked %q before clearing", q)
	}
	if r := ok("kubernetes", "info"); !strings.Contains(r.stdout, "not configured") {
		t.Errorf("after Clear, %s", r)
	}
	b.noOverflow("/settings")
	kl.waitStopped(t, odTimeout)
}
