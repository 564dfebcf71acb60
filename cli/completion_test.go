package cli_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dstackai/dstack/cli"
)

// TestCompletion: `dstack completion SHELL` prints the shell's script, and
// the completions it asks for name dstack's commands.
func TestCompletion(t *testing.T) {
	t.Parallel()
	run := func(t *testing.T, args ...string) string {
		var out, errOut bytes.Buffer
		e := &cli.Env{Stdout: &out, Stderr: &errOut, Getenv: func(string) string { return "" }}
		code := e.Run(t.Context(), args)
		if code != 0 {
			t.Fatalf("dstack %s: exit %d, stderr %q", strings.Join(args, " "), code, errOut.String())
		}
		return out.String()
	}
	for _, tc := range []struct{ shell, head string }{
		{"bash", "# bash completion V2 for dstack"},
		{"zsh", "#compdef dstack"},
		{"fish", "# fish completion for dstack"},
		{"powershell", "# powershell completion for dstack"},
	} {
		t.Run(tc.shell, func(t *testing.T) {
			t.Parallel()
			script := run(t, "completion", tc.shell)
			if !strings.HasPrefix(script, tc.head) {
				t.Fatalf("dstack completion %s starts %.80q, want %q", tc.shell, script, tc.head)
			}
			// The script is valid for its shell where the shell is here.
			check := map[string][]string{"bash": {"bash", "-n"}, "zsh": {"zsh", "-n"}, "fish": {"fish", "--no-execute"}}[tc.shell]
			if check == nil {
				return
			}
			if _, err := exec.LookPath(check[0]); err != nil {
				return
			}
			path := filepath.Join(t.TempDir(), "dstack."+tc.shell)
			if err := os.WriteFile(path, []byte(script), 0o600); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.CommandContext(t.Context(), check[0], append(check[1:], path)...).CombinedOutput(); err != nil {
				t.Errorf("%s rejects the script of dstack completion %s: %v\n%s", check[0], tc.shell, err, out)
			}
		})
	}
	t.Run("Complete", func(t *testing.T) {
		t.Parallel()
		// What the scripts run to complete `dstack o<TAB>`.
		out := run(t, "__complete", "o")
		if !strings.Contains(out, "on-demand\t") {
			t.Errorf("completions of `dstack o`: %q, want on-demand", out)
		}
	})
}
