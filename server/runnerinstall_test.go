package server_test

import (
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/server"
	"github.com/dstackai/dstack/server/servertest"
)

// fakeELF writes an ELF header for machine followed by payload: enough for
// the server to tell its platform, not enough to run.
func fakeELF(t *testing.T, dir, name string, machine elf.Machine, payload string) string {
	t.Helper()
	var b bytes.Buffer
	b.Write([]byte{0x7f, 'E', 'L', 'F', byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), byte(elf.EV_CURRENT), byte(elf.ELFOSABI_NONE)})
	b.Write(make([]byte, 8)) // ABI version and padding
	le := binary.LittleEndian
	b.Write(le.AppendUint16(nil, uint16(elf.ET_EXEC)))
	b.Write(le.AppendUint16(nil, uint16(machine)))
	b.Write(le.AppendUint32(nil, uint32(elf.EV_CURRENT)))
	b.Write(make([]byte, 8+8+8+4)) // entry, phoff, shoff, flags
	b.Write(le.AppendUint16(nil, 64))
	b.Write(make([]byte, 2*5)) // phentsize, phnum, shentsize, shnum, shstrndx
	b.WriteString(payload)
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, b.Bytes(), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func withRunnerBinaries(paths ...string) servertest.Option {
	return servertest.WithConfig(func(c *server.Config) { c.RunnerBinaries = paths })
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestRunnerInstallerScript(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		external string
		header   map[string]string
		want     func(srvURL string) string
	}{
		{"request host", "", nil, func(u string) string { return u }},
		{"external URL", "https://dstack.example.com/", nil, func(string) string { return "https://dstack.example.com" }},
		{"behind a TLS proxy", "", map[string]string{"X-Forwarded-Proto": "https"}, func(u string) string { return "https://" + strings.TrimPrefix(u, "http://") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := servertest.Start(t, servertest.WithConfig(func(c *server.Config) { c.ExternalURL = tt.external }))
			rp := do(t, srv.URL, req{method: http.MethodGet, path: "/runner", header: tt.header})
			if rp.status != http.StatusOK {
				t.Fatalf("status %d: %s", rp.status, rp.body)
			}
			if ct := rp.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/x-shellscript") {
				t.Errorf("Content-Type %q, want text/x-shellscript", ct)
			}
			body := string(rp.body)
			if !strings.HasPrefix(body, "#!/bin/sh\n") {
				t.Errorf("the script does not start with #!/bin/sh: %.40q", body)
			}
			if want := "default_server='" + tt.want(srv.URL) + "'"; !strings.Contains(body, want) {
				t.Errorf("the script does not hold %s", want)
			}
		})
	}
}

func TestRunnerDownload(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	amd64 := fakeELF(t, dir, "dstack-runner", elf.EM_X86_64, "amd64 runner")
	arm64 := fakeELF(t, dir, "dstack-runner-linux-arm64", elf.EM_AARCH64, "arm64 runner, a little longer")
	if got := server.RunnerBinariesAt(amd64); strings.Join(got, ",") != amd64+","+arm64 {
		t.Errorf("RunnerBinariesAt = %v, want the binary and its arm64 sibling", got)
	}
	srv := servertest.Start(t, withRunnerBinaries(server.RunnerBinariesAt(amd64)...))
	for _, tc := range []struct{ arch, path string }{{"amd64", amd64}, {"arm64", arm64}} {
		want, err := os.ReadFile(tc.path)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256Hex(want)
		base := "/runner/download/linux/" + tc.arch + "/dstack-runner"
		rp := do(t, srv.URL, req{method: http.MethodGet, path: base})
		if rp.status != http.StatusOK || !bytes.Equal(rp.body, want) {
			t.Errorf("%s: status %d, %d bytes; want 200 and the %d bytes of %s", base, rp.status, len(rp.body), len(want), tc.path)
		}
		if got := rp.header.Get("Content-Length"); got != strconv.Itoa(len(want)) {
			t.Errorf("%s: Content-Length %q, want %d", base, got, len(want))
		}
		if got := rp.header.Get("X-Checksum-Sha256"); got != sum {
			t.Errorf("%s: X-Checksum-Sha256 %q, want %s", base, got, sum)
		}
		rp = do(t, srv.URL, req{method: http.MethodGet, path: base + ".sha256"})
		if rp.status != http.StatusOK || string(rp.body) != sum+"  dstack-runner\n" {
			t.Errorf("%s.sha256: status %d, body %q; want %q", base, rp.status, rp.body, sum+"  dstack-runner\n")
		}
		// A client that has this version already gets 304.
		rp = do(t, srv.URL, req{method: http.MethodGet, path: base, header: map[string]string{"If-None-Match": `"` + sum + `"`}})
		if rp.status != http.StatusNotModified {
			t.Errorf("%s with its ETag: status %d, want 304", base, rp.status)
		}
	}

	// A binary replaced on the server is served as it is now.
	fakeELF(t, dir, "dstack-runner", elf.EM_X86_64, "amd64 runner, upgraded")
	rp := do(t, srv.URL, req{method: http.MethodGet, path: "/runner/download/linux/amd64/dstack-runner"})
	if !strings.HasSuffix(string(rp.body), "upgraded") || rp.header.Get("X-Checksum-Sha256") != sha256Hex(rp.body) {
		t.Errorf("after an upgrade: body ends %q, checksum %s; want the new binary and its checksum", rp.body[max(0, len(rp.body)-10):], rp.header.Get("X-Checksum-Sha256"))
	}

	for _, path := range []string{"/runner/download/linux/riscv64/dstack-runner", "/runner/download/linux/riscv64/dstack-runner.sha256"} {
		wantError(t, path, do(t, srv.URL, req{method: http.MethodGet, path: path}), http.StatusNotFound, api.CodeNotFound, "linux/riscv64", "linux/amd64, linux/arm64")
	}
	wantError(t, "darwin", do(t, srv.URL, req{method: http.MethodGet, path: "/runner/download/darwin/arm64/dstack-runner"}), http.StatusNotFound, api.CodeNotFound, "Linux only")
}

func TestRunnerDownloadWithoutBinary(t *testing.T) {
	t.Parallel()
	notELF := filepath.Join(t.TempDir(), "dstack-runner")
	if err := os.WriteFile(notELF, []byte("#!/bin/sh\necho not a runner\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		binaries []string
	}{
		{"none configured", nil},
		{"missing file", []string{filepath.Join(t.TempDir(), "gone")}},
		{"not an executable for Linux", []string{notELF}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := servertest.Start(t, withRunnerBinaries(tt.binaries...))
			for _, path := range []string{"/runner/download/linux/amd64/dstack-runner", "/runner/download/linux/amd64/dstack-runner.sha256"} {
				msg := wantError(t, path, do(t, srv.URL, req{method: http.MethodGet, path: path}), http.StatusNotFound, api.CodeNotFound, "no dstack-runner binary", "--runner-binary")
				if strings.Contains(msg, filepath.Dir(notELF)) {
					t.Errorf("%s: the message %q shows a path on the server", path, msg)
				}
			}
		})
	}
}

// buildRunner builds cmd/dstack-runner into dir, as `make build` does.
func buildRunner(t testing.TB, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "dstack-runner")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/dstackai/dstack/cmd/dstack-runner")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/dstack-runner: %v\n%s", err, out)
	}
	return bin
}

// installerEnv is a server that gives out a freshly built dstack-runner,
// and the installer script it serves, saved to a file.
type installerEnv struct {
	srv    *servertest.Server
	script string
	runner []byte // the binary the server gives out
}

func setupInstaller(t *testing.T) *installerEnv {
	t.Helper()
	if testing.Short() {
		t.Skip("builds dstack-runner (-short)")
	}
	if runtime.GOOS != "linux" || (runtime.GOARCH != "amd64" && runtime.GOARCH != "arm64") {
		t.Skip("the installer installs on linux/amd64 and linux/arm64 only")
	}
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command to build dstack-runner with")
	}
	bin := buildRunner(t, t.TempDir())
	runner, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	srv := servertest.Start(t, withRunnerBinaries(bin))
	rp := do(t, srv.URL, req{method: http.MethodGet, path: "/runner"})
	if rp.status != http.StatusOK {
		t.Fatalf("GET /runner: %d %s", rp.status, rp.body)
	}
	script := filepath.Join(t.TempDir(), "get-dstack-runner.sh")
	if err := os.WriteFile(script, rp.body, 0o644); err != nil {
		t.Fatal(err)
	}
	return &installerEnv{srv: srv, script: script, runner: runner}
}

// install runs the script with shell (sh, or busybox sh) and env on top of
// a minimal environment, and returns its output and error.
func install(t *testing.T, shell []string, script string, env map[string]string) (string, error) {
	t.Helper()
	args := append(shell[1:len(shell):len(shell)], script)
	cmd := exec.Command(shell[0], args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "LC_ALL=C"}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	done := make(chan struct{})
	var out []byte
	var err error
	go func() {
		defer close(done)
		out, err = cmd.CombinedOutput()
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("the installer did not finish in 2 minutes:\n%s", out)
	}
	t.Logf("%s %s:\n%s", strings.Join(shell, " "), filepath.Base(script), out)
	return string(out), err
}

// wantInstalled checks the binary at path is the server's, and runs.
func wantInstalled(t *testing.T, e *installerEnv, path string) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("not installed: %v", err)
	}
	if !bytes.Equal(got, e.runner) {
		t.Fatalf("%s is not the binary the server gives out", path)
	}
	out, err := exec.Command(path, "version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "dstack-runner ") {
		t.Fatalf("%s version: %v, %q", path, err, out)
	}
}

func TestRunnerInstallerInstalls(t *testing.T) {
	t.Parallel()
	e := setupInstaller(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	target := filepath.Join(bin, "dstack-runner")

	// First install, without a systemd unit.
	out, err := install(t, []string{"sh"}, e.script, map[string]string{"DSTACK_INSTALL_DIR": bin, "DSTACK_NO_SYSTEMD": "1"})
	if err != nil {
		t.Fatalf("the installer failed: %v\n%s", err, out)
	}
	wantInstalled(t, e, target)
	for _, want := range []string{
		"Installed " + target,
		"config --server " + e.srv.URL + " --token <your token>",
		target + " start", // not on PATH: the full path
		bin + " is not on your PATH",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the installer's output does not say %q", want)
		}
	}

	// Again, into a systemd directory of our own: the binary is replaced in
	// place and the unit written.
	units := filepath.Join(dir, "systemd")
	out, err = install(t, []string{"sh"}, e.script, map[string]string{"DSTACK_INSTALL_DIR": bin, "DSTACK_SYSTEMD_DIR": units, "PATH": bin + ":" + os.Getenv("PATH")})
	if err != nil {
		t.Fatalf("the second run failed: %v\n%s", err, out)
	}
	wantInstalled(t, e, target)
	unit, err := os.ReadFile(filepath.Join(units, "dstack-runner.service"))
	if err != nil {
		t.Fatalf("no unit: %v", err)
	}
	for _, want := range []string{
		"\nExecStart=" + target + " start\n",
		"\nRestart=always\n",
		"\nAfter=network-online.target",
		"\nWants=network-online.target\n",
		"\nEnvironment=HOME=/",
		"\n[Install]\nWantedBy=multi-user.target\n",
	} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("the unit does not hold %q:\n%s", strings.TrimSpace(want), unit)
		}
	}
	for _, want := range []string{"Wrote the systemd unit", "\n  dstack-runner config --server " + e.srv.URL, "systemctl enable --now dstack-runner"} {
		if !strings.Contains(out, want) {
			t.Errorf("the second run's output does not say %q", want)
		}
	}
	if entries, _ := os.ReadDir(bin); len(entries) != 1 {
		t.Errorf("%s holds %d entries, want only dstack-runner (no leftovers)", bin, len(entries))
	}
}

// TestRunnerInstallerCurlPipe runs the installer as the README shows it,
// `curl -fsSL URL/runner | sh`.
func TestRunnerInstallerCurlPipe(t *testing.T) {
	t.Parallel()
	e := setupInstaller(t)
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("no curl")
	}
	bin := t.TempDir()
	cmd := exec.Command("sh", "-c", "curl -fsSL "+e.srv.URL+"/runner | sh")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "DSTACK_INSTALL_DIR=" + bin, "DSTACK_NO_SYSTEMD=1"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("curl | sh: %v\n%s", err, out)
	}
	wantInstalled(t, e, filepath.Join(bin, "dstack-runner"))
}

// TestRunnerInstallerBusybox runs the installer where only busybox is: its
// sh, wget and sha256sum, as on a minimal image.
func TestRunnerInstallerBusybox(t *testing.T) {
	t.Parallel()
	e := setupInstaller(t)
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		t.Skip("no busybox")
	}
	tools := t.TempDir()
	for _, applet := range []string{"sh", "wget", "sha256sum", "uname", "id", "mkdir", "mktemp", "cp", "mv", "chmod", "rm", "cut", "sed", "head", "cat"} {
		if err := os.Symlink(busybox, filepath.Join(tools, applet)); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(t.TempDir(), "bin")
	out, err := install(t, []string{busybox, "sh"}, e.script, map[string]string{"PATH": tools, "DSTACK_INSTALL_DIR": bin, "DSTACK_NO_SYSTEMD": "1"})
	if err != nil {
		t.Fatalf("the installer failed with busybox only: %v\n%s", err, out)
	}
	wantInstalled(t, e, filepath.Join(bin, "dstack-runner"))
}

// otherMachine is, by GOARCH, what uname -m says on the other architecture
// the installer knows.
var otherMachine = map[string]string{"amd64": "aarch64", "arm64": "x86_64"}

// TestRunnerInstallerRefuses: on a platform the server has no binary for,
// or when the download does not match its checksum, the installer says why
// and installs nothing.
func TestRunnerInstallerRefuses(t *testing.T) {
	t.Parallel()
	e := setupInstaller(t)

	// A server that gives out a binary its checksum does not match.
	corrupt := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, ".sha256") {
			_, _ = w.Write([]byte(strings.Repeat("0", 64) + "  dstack-runner\n"))
			return
		}
		_, _ = w.Write([]byte("truncated"))
	}))
	t.Cleanup(corrupt.Close)

	tests := []struct {
		name   string
		uname  string // what the fake uname says to -s and -m, "" for the real one
		server string // DSTACK_SERVER
		want   string
	}{
		{name: "not Linux", uname: "Darwin arm64", want: "runs on Linux only; this machine runs Darwin"},
		{name: "unknown architecture", uname: "Linux mips", want: "this machine is mips"},
		{name: "no binary for the architecture", uname: "Linux " + otherMachine[runtime.GOARCH], want: "no dstack-runner binary for linux/"},
		{name: "corrupt download", server: corrupt.URL, want: "is corrupt"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := os.Getenv("PATH")
			if tt.uname != "" {
				fake := t.TempDir()
				s, m, _ := strings.Cut(tt.uname, " ")
				script := "#!/bin/sh\ncase $1 in -s) echo " + s + " ;; -m) echo " + m + " ;; esac\n"
				if err := os.WriteFile(filepath.Join(fake, "uname"), []byte(script), 0o755); err != nil {
					t.Fatal(err)
				}
				path = fake + ":" + path
			}
			bin := filepath.Join(t.TempDir(), "bin")
			env := map[string]string{"PATH": path, "DSTACK_INSTALL_DIR": bin, "DSTACK_NO_SYSTEMD": "1"}
			if tt.server != "" {
				env["DSTACK_SERVER"] = tt.server
			}
			out, err := install(t, []string{"sh"}, e.script, env)
			if err == nil {
				t.Fatalf("the installer succeeded, want it to fail:\n%s", out)
			}
			if !strings.Contains(out, tt.want) {
				t.Errorf("the installer's output does not say %q:\n%s", tt.want, out)
			}
			if _, err := os.Stat(filepath.Join(bin, "dstack-runner")); err == nil {
				t.Error("dstack-runner was installed anyway")
			}
		})
	}
}
