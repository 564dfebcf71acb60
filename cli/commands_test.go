package cli_test

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dstackai/dstack/userconfig"
	"github.com/dstackai/dstack/workflow"
)

// These tests need no server: they cover the command line, local files and
// the errors met before the server answers.

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"bogus"}, `unknown command "bogus"`},
		{[]string{"ps", "--bogus"}, "unknown flag: --bogus"},
		{[]string{"ps", "extra"}, `unexpected argument "extra"`},
		{[]string{"logs"}, "missing RUN"},
		{[]string{"logs", "a", "b"}, `unexpected argument "b"`},
		{[]string{"logs", "a", "--since", "soon"}, "--since"},
		{[]string{"stop"}, "missing RUN"},
		{[]string{"artifacts", "list"}, "missing RUN"},
		{[]string{"artifacts", "download"}, "missing RUN"},
		{[]string{"artifacts", "bogus"}, `unknown command "bogus"`},
		{[]string{"run"}, "missing WORKFLOW"},
		{[]string{"run", "train", "--epochs"}, "--epochs needs a value"},
		{[]string{"run", "train", "prepare"}, `unexpected argument "prepare"`},
		{[]string{"run", "--max-code-size", "lots", "train"}, "--max-code-size"},
		{[]string{"run", "--wait-server", "soon", "train"}, "--wait-server"},
		{[]string{"logs", "a", "-f", "--wait-server", "-1m"}, "--wait-server"},
		{[]string{"init", "x"}, `unexpected argument "x"`},
		{[]string{"config", "--server"}, "flag needs an argument"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			t.Parallel()
			h := setup(t)
			h.writeFile(".dstack/workflows.yaml", testWorkflows)
			r := h.run(tt.args...)
			if r.code != 2 {
				t.Errorf("exit code %d, want 2", r.code)
			}
			if !strings.HasPrefix(r.stderr, "Error: ") || !strings.Contains(r.stderr, tt.want) {
				t.Errorf("stderr %q does not start with Error: and contain %q", r.stderr, tt.want)
			}
			if !strings.Contains(r.stderr, "--help") {
				t.Errorf("stderr %q does not point at --help", r.stderr)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	t.Parallel()
	h := setup(t)
	for _, args := range [][]string{{}, {"--help"}, {"run", "--help"}, {"run", "train", "-h"}, {"artifacts"}, {"help", "logs"}, {"ps", "-h"}} {
		r := h.run(args...)
		if r.code != 0 || !strings.Contains(r.stdout, "Usage:") {
			t.Errorf("%q: exit %d, stdout %q", args, r.code, r.stdout)
		}
	}
	if r := h.run("--version"); r.code != 0 || !strings.Contains(r.stdout, "dstack version") {
		t.Errorf("--version: %+v", r)
	}
	r := h.run("run", "--help")
	for _, want := range []string{"--VAR VALUE", "--detach", "dstack logs RUN -f"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("run --help does not mention %q", want)
		}
	}
}

func TestNoServerConfigured(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"ps"}, {"status", "-a"}, {"logs", "r"}, {"stop", "r"}, {"artifacts", "list", "r"},
		{"artifacts", "download", "r"}, {"runners"}, {"run", "hello"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			t.Parallel()
			h := setup(t)
			h.writeFile(".dstack/workflows.yaml", testWorkflows)
			r := h.run(args...)
			if r.code != 1 {
				t.Errorf("exit code %d, want 1", r.code)
			}
			for _, want := range []string{"Error: no dstack server is configured", "dstack config --server URL --token TOKEN", "dstack server"} {
				if !strings.Contains(r.stderr, want) {
					t.Errorf("stderr %q does not contain %q", r.stderr, want)
				}
			}
		})
	}
}

func TestNoToken(t *testing.T) {
	t.Parallel()
	h := setup(t)
	h.vars["DSTACK_SERVER"] = "http://127.0.0.1:3000"
	r := h.run("ps")
	if r.code != 1 || !strings.Contains(r.stderr, "no token is configured") || !strings.Contains(r.stderr, "dstack config --token TOKEN") {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestBadServerURL(t *testing.T) {
	t.Parallel()
	for _, url := range []string{"localhost:3000", "ftp://example.com", "::"} {
		h := setup(t)
		if err := userconfig.Save(h.configPath, &userconfig.Config{Server: url, Token: "t"}); err != nil {
			t.Fatal(err)
		}
		r := h.run("runners")
		if r.code != 1 || !strings.Contains(r.stderr, "dstack config --server URL") || !strings.Contains(r.stderr, h.configPath) {
			t.Errorf("%s: exit %d, stderr %q", url, r.code, r.stderr)
		}
	}
}

func TestServerUnreachable(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	h := setup(t)
	h.vars["DSTACK_SERVER"] = "http://" + addr
	h.vars["DSTACK_TOKEN"] = "t"
	r := h.run("ps")
	if r.code != 1 || !strings.Contains(r.stderr, "cannot reach the dstack server at http://"+addr) {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	r = h.run("config", "--server", "http://"+addr, "--token", "t")
	if r.code != 1 || !strings.Contains(r.stderr, "--no-check") {
		t.Fatalf("config: exit %d, stderr %q", r.code, r.stderr)
	}
	if _, err := os.Stat(h.configPath); !os.IsNotExist(err) {
		t.Fatalf("config was saved although the server did not answer: %v", err)
	}
}

func TestMalformedConfigFile(t *testing.T) {
	t.Parallel()
	h := setup(t)
	if err := os.MkdirAll(filepath.Dir(h.configPath), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(h.configPath, []byte("server: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := h.run("ps")
	if r.code != 1 || !strings.Contains(r.stderr, h.configPath) {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestConfigNoCheck(t *testing.T) {
	t.Parallel()
	h := setup(t)
	r := h.run("config")
	if r.code != 0 || !strings.Contains(r.stdout, "server:      (none)") || !strings.Contains(r.stdout, "dstack config --server URL --token TOKEN") {
		t.Fatalf("show empty: %+v", r)
	}
	r = h.run("config", "--server", "http://127.0.0.1:9", "--token", "0123456789abcdef", "--no-check")
	if r.code != 0 || !strings.Contains(r.stdout, "not checked") {
		t.Fatalf("set: %+v", r)
	}
	cfg, err := userconfig.Load(h.configPath)
	if err != nil || cfg.Server != "http://127.0.0.1:9" || cfg.Token != "0123456789abcdef" {
		t.Fatalf("saved %+v, %v", cfg, err)
	}
	// Only the token changes.
	if r := h.run("config", "--token", "fedcba9876543210", "--no-check"); r.code != 0 {
		t.Fatalf("set token: %+v", r)
	}
	cfg, _ = userconfig.Load(h.configPath)
	if cfg.Server != "http://127.0.0.1:9" || cfg.Token != "fedcba9876543210" {
		t.Fatalf("saved %+v", cfg)
	}
	r = h.run("config")
	if r.code != 0 || strings.Contains(r.stdout, "fedcba9876543210") || !strings.Contains(r.stdout, "fedc****") {
		t.Fatalf("show must mask the token: %+v", r)
	}
	h.vars["DSTACK_SERVER"] = "http://other:1"
	r = h.run("config")
	if !strings.Contains(r.stdout, "http://other:1 (from DSTACK_SERVER)") {
		t.Fatalf("show must say the environment wins: %+v", r)
	}
}

func TestConfigNeedsServer(t *testing.T) {
	t.Parallel()
	h := setup(t)
	r := h.run("config", "--token", "abc")
	if r.code != 2 || !strings.Contains(r.stderr, "--server URL") {
		t.Fatalf("%+v", r)
	}
	r = h.run("config", "--server", "not a url", "--token", "abc", "--no-check")
	if r.code != 1 || !strings.Contains(r.stderr, "--server") {
		t.Fatalf("%+v", r)
	}
}

func TestInit(t *testing.T) {
	t.Parallel()
	h := setup(t)
	r := h.run("init")
	path := workflow.Path(h.dir)
	if r.code != 0 || !strings.Contains(r.stdout, path) || !strings.Contains(r.stdout, "dstack run train") {
		t.Fatalf("init: %+v", r)
	}
	got, err := os.ReadFile(path)
	if err != nil || string(got) != string(workflow.Sample()) {
		t.Fatalf("wrote %q, %v", got, err)
	}
	if _, err := workflow.Load(h.dir); err != nil {
		t.Fatalf("the sample does not load: %v", err)
	}

	// An existing file is kept.
	h.writeFile(".dstack/workflows.yaml", "# mine\n")
	r = h.run("init")
	if r.code != 1 || !strings.Contains(r.stderr, "already exists") || !strings.Contains(r.stderr, "--force") {
		t.Fatalf("init over a file: %+v", r)
	}
	if got, _ := os.ReadFile(path); string(got) != "# mine\n" {
		t.Fatalf("init overwrote the file: %q", got)
	}
	r = h.run("init", "--force")
	if got, _ := os.ReadFile(path); r.code != 0 || string(got) != string(workflow.Sample()) {
		t.Fatalf("init --force: %+v, file %q", r, got)
	}
}

func TestInitKeepsWorkflowsYml(t *testing.T) {
	t.Parallel()
	h := setup(t)
	h.writeFile(".dstack/workflows.yml", "# mine\n")
	if r := h.run("init"); r.code != 1 || !strings.Contains(r.stderr, "workflows.yml already exists") {
		t.Fatalf("%+v", r)
	}
}

// The errors of `dstack run` found before any call to the server.
func TestRunLocalErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		file     string // workflows.yaml; empty for none
		args     []string
		wantCode int
		want     []string
	}{
		{"no workflows file", "", []string{"run", "train"}, 1,
			[]string{"workflows.yaml does not exist", "dstack init"}},
		{"unknown workflow", testWorkflows, []string{"run", "tain"}, 1,
			[]string{`no workflow "tain"`, "prepare, train, hello"}},
		{"unknown variable", testWorkflows, []string{"run", "train", "--epoch", "3"}, 1,
			[]string{`unknown variable "epoch"`, "epochs"}},
		{"malformed yaml", "workflows:\n  - name: a\n    provider: bash\n    commands: [echo\n", []string{"run", "a"}, 1,
			[]string{filepath.Join(".dstack", "workflows.yaml") + ":"}},
		{"invalid field", "workflows:\n  - name: a\n    provider: bahs\n    commands: [echo]\n", []string{"run", "a"}, 1,
			[]string{"workflows.yaml:3", "provider"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := setup(t)
			// A server is configured but never reached: these fail first.
			h.vars["DSTACK_SERVER"] = "http://127.0.0.1:9"
			h.vars["DSTACK_TOKEN"] = "t"
			if tt.file != "" {
				h.writeFile(".dstack/workflows.yaml", tt.file)
			}
			r := h.run(tt.args...)
			if r.code != tt.wantCode {
				t.Errorf("exit code %d, want %d", r.code, tt.wantCode)
			}
			for _, w := range tt.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr %q does not contain %q", r.stderr, w)
				}
			}
			if strings.Contains(r.stderr, "cannot reach") {
				t.Errorf("the server was called: %q", r.stderr)
			}
		})
	}
}

// TestImports keeps the CLI off the server's internals: it talks to the
// server through package client only.
func TestImports(t *testing.T) {
	t.Parallel()
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command:", err)
	}
	out, err := exec.Command(gobin, "list", "-deps", "-f", "{{.ImportPath}}", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, p := range strings.Fields(string(out)) {
		for _, banned := range []string{"github.com/dstackai/dstack/server", "github.com/dstackai/dstack/store"} {
			if p == banned || strings.HasPrefix(p, banned+"/") {
				t.Errorf("cli depends on %s: talk to the server through package client", p)
			}
		}
	}
}
