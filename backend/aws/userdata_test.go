package aws

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dstackai/dstack/executor/executortest"
)

func renderScript(t *testing.T, u userData) string {
	t.Helper()
	enc, err := u.render()
	if err != nil {
		t.Fatal(err)
	}
	b, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestUserDataTemplate(t *testing.T) {
	t.Parallel()
	s := renderScript(t, userData{ServerURL: "http://h:1/it's", JoinToken: "dstj_abc", Spot: true})
	for _, want := range []string{"server='http://h:1/it'\\''s'", "token='dstj_abc'", "spot=1", "token_tag='" + TagJoinToken + "'"} {
		if !strings.Contains(s, want) {
			t.Errorf("the script lacks %q", want)
		}
	}
	s = renderScript(t, userData{ServerURL: "http://h"})
	if !strings.Contains(s, "token=''") || !strings.Contains(s, "spot=\n") {
		t.Errorf("a many-instance on-demand script should have no token and no spot flag:\n%s", s)
	}
	if strings.Contains(s, "set -x") {
		t.Error("the script traces its commands, tokens included")
	}
}

// bootEnv is what a boot script needs: a server whose GET /runner is an
// installer that puts a stub dstack-runner in dir; the stub records how it
// was started in dir/ran.
func bootEnv(t *testing.T) (serverURL, dir string) {
	t.Helper()
	dir = t.TempDir()
	stub := fmt.Sprintf(`#!/bin/sh
{
	printf 'args:'
	printf ' %%s' "$@"
	printf '\n'
	printf 'server=%%s\n' "${DSTACK_SERVER:-}"
	printf 'token=%%s\n' "${DSTACK_JOIN_TOKEN:-}"
	printf 'imds=%%s\n' "${DSTACK_IMDS_ENDPOINT:-}"
} >%s/ran
`, dir)
	installer := fmt.Sprintf("#!/bin/sh\nset -eu\nprintf '%%s' \"$DSTACK_SERVER\" >%[1]s/installer-server\ncat >%[1]s/dstack-runner <<'STUB'\n%[2]sSTUB\nchmod 0755 %[1]s/dstack-runner\n", dir, stub)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/runner" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprint(w, installer)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, dir
}

// TestUserDataRuns runs the boot scripts of launches on the fake: each
// instance starts dstack-runner with its own token, read from the user data
// (one instance) or from its tag through the fake's IMDSv2 (more), under
// busybox's sh with only its applets (no curl: IMDSv2's PUT goes through
// nc) and under the host's sh with curl where there is one.
func TestUserDataRuns(t *testing.T) {
	t.Parallel()
	e := setup(t)
	type shell struct {
		name string
		sh   []string // the command that runs a script
		path func(stubDir string) string
	}
	var shells []shell
	bctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if bb, err := executortest.Busybox(bctx); err != nil {
		t.Logf("no static busybox (%v): the busybox runs are skipped", err)
	} else {
		bin := t.TempDir()
		if out, err := exec.Command(bb, "--install", "-s", bin).CombinedOutput(); err != nil {
			t.Fatalf("busybox --install: %v\n%s", err, out)
		}
		shells = append(shells, shell{"busybox", []string{bb, "sh"}, func(stub string) string { return bin + ":" + stub }})
	}
	if _, err := exec.LookPath("curl"); err == nil {
		if sh, err := exec.LookPath("sh"); err == nil {
			shells = append(shells, shell{"host sh with curl", []string{sh}, func(stub string) string { return stub + ":" + os.Getenv("PATH") }})
		}
	}
	if len(shells) == 0 {
		t.Skip("neither busybox nor sh with curl here")
	}
	for _, sh := range shells {
		for _, tc := range []struct {
			n, index int
			spot     bool
		}{{n: 1, index: 0}, {n: 3, index: 2, spot: true}} {
			t.Run(fmt.Sprintf("%s/%d-of-%d", sh.name, tc.index, tc.n), func(t *testing.T) {
				serverURL, dir := bootEnv(t)
				req := request("m5.large", tc.spot, tc.n)
				req.ServerURL = serverURL
				got := e.mustLaunch(req)
				id := got[tc.index].CloudID
				fi := e.instance(id)
				imds := e.fake.IMDSURL(id)
				script := filepath.Join(dir, "user-data")
				if err := os.WriteFile(script, []byte(fi.UserData), 0o600); err != nil {
					t.Fatal(err)
				}
				rctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				cmd := exec.CommandContext(rctx, sh.sh[0], append(sh.sh[1:], script)...)
				cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its subshells die with it
				cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
				cmd.WaitDelay = 5 * time.Second
				cmd.Env = []string{"PATH=" + sh.path(dir), "HOME=" + dir, "TMPDIR=" + dir, "DSTACK_IMDS_ENDPOINT=" + imds}
				out, err := cmd.CombinedOutput()
				t.Logf("boot script output:\n%s", out)
				if err != nil {
					t.Fatalf("the boot script failed: %v", err)
				}
				ran, err := os.ReadFile(filepath.Join(dir, "ran"))
				if err != nil {
					t.Fatalf("the runner was not started: %v", err)
				}
				wantArgs := "args: start --server " + serverURL
				if tc.spot {
					wantArgs += " --watch-spot-interruption"
				}
				want := fmt.Sprintf("%s\nserver=%s\ntoken=%s\nimds=%s\n", wantArgs, serverURL, req.Instances[tc.index].JoinToken, imds)
				if string(ran) != want {
					t.Errorf("the runner was started as\n%s\nwant\n%s", ran, want)
				}
				if b, _ := os.ReadFile(filepath.Join(dir, "installer-server")); string(b) != serverURL {
					t.Errorf("the installer got DSTACK_SERVER=%q, want %q", b, serverURL)
				}
				for _, s := range req.Instances {
					if strings.Contains(string(out), s.JoinToken) {
						t.Errorf("the script printed a join token")
					}
				}
			})
		}
	}
}
