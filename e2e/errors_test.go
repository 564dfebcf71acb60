package e2e

import (
	"crypto/rand"
	"strings"
	"testing"
)

func TestBadInput(t *testing.T) {
	eachDB(t, func(t *testing.T, dsn string) {
		const maxCodeSize = 64 << 10
		c := newCluster(t, dsn, "--max-code-size", "65536")
		random := make([]byte, 2*maxCodeSize) // incompressible
		_, _ = rand.Read(random)

		tests := []struct {
			name  string
			files map[string]string
			args  []string
			env   []string
			code  int
			want  []string // on stderr
		}{
			{
				name: "malformed YAML",
				files: map[string]string{".dstack/workflows.yaml": `workflows:
  - name: a
    provider: bash
    commands: [echo hi
`},
				args: []string{"run", "a"},
				code: 1,
				want: []string{".dstack/workflows.yaml:4:", "invalid YAML"},
			},
			{
				name: "unknown provider",
				files: map[string]string{".dstack/workflows.yaml": `workflows:
  - name: a
    provider: podman
    commands: [echo hi]
`},
				args: []string{"run", "a"},
				code: 1,
				want: []string{".dstack/workflows.yaml:3:", `unknown provider "podman"`, "bash, docker, python"},
			},
			{
				name: "dependency cycle",
				files: map[string]string{".dstack/workflows.yaml": `workflows:
  - name: a
    provider: bash
    depends-on: [b]
    commands: [echo a]
  - name: b
    provider: bash
    depends-on: [a]
    commands: [echo b]
`},
				args: []string{"run", "a"},
				code: 1,
				want: []string{".dstack/workflows.yaml", "dependency cycle a -> b -> a"},
			},
			{
				name:  "unknown workflow",
				files: hello,
				args:  []string{"run", "nope"},
				code:  1,
				want:  []string{`"nope"`, "hello"},
			},
			{
				name:  "wrong token",
				files: hello,
				args:  []string{"run", "hello"},
				env:   []string{"DSTACK_TOKEN=dstu_wrong"},
				code:  1,
				want:  []string{"refused the token", "DSTACK_TOKEN"},
			},
			{
				name:  "code too large for the server",
				files: map[string]string{".dstack/workflows.yaml": hello[".dstack/workflows.yaml"], "data.bin": string(random)},
				args:  []string{"run", "hello"},
				code:  1,
				want:  []string{"over the server's limit of 64KiB", ".dstackignore", "dstack server --max-code-size"},
			},
			{
				name:  "no workflow",
				files: hello,
				args:  []string{"run"},
				code:  2,
				want:  []string{"missing WORKFLOW", "dstack run --help"},
			},
			{
				name:  "unknown flag",
				files: hello,
				args:  []string{"ps", "--bogus"},
				code:  2,
				want:  []string{"unknown flag: --bogus", "dstack ps --help"},
			},
		}
		// The group returns once its parallel subtests have all ended.
		t.Run("cli", func(t *testing.T) {
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					t.Parallel()
					r := c.cli(t, project(t, tt.files), tt.env, tt.args...)
					if r.code != tt.code {
						t.Errorf("exit code %d, want %d", r.code, tt.code)
					}
					if !strings.HasPrefix(r.stderr, "Error: ") && !strings.Contains(r.stderr, "\nError: ") {
						t.Errorf("stderr has no line starting with Error:")
					}
					for _, want := range tt.want {
						if !strings.Contains(r.stderr, want) {
							t.Errorf("stderr does not say %q", want)
						}
					}
					if t.Failed() {
						t.Logf("%s", r)
					}
				})
			}
		})
		if runs := c.runs(); len(runs) != 0 {
			t.Errorf("runs recorded: %+v", runs)
		}

		// A runner with a wrong token says so and exits.
		p := c.start("runner bad", "", c.configRunner("bad", "dstu_wrong"), bins.runner, "start")
		if code := p.wait(t, startTimeout); code != 1 {
			t.Errorf("dstack-runner start with a wrong token: exit code %d, want 1\n%s", code, p.output())
		}
		if !strings.Contains(p.stderr(), "Error: the server refused the token") || !strings.Contains(p.stderr(), "dstack-runner config --token TOKEN") {
			t.Errorf("dstack-runner start with a wrong token:\n%s", p.output())
		}
		if rs := c.runners(); len(rs) != 0 {
			t.Errorf("runners registered: %+v", rs)
		}
	})
}
