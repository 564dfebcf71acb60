package workflow

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/dstackai/dstack/api"
)

func mustParse(t *testing.T, yaml string) *File {
	t.Helper()
	f, err := Parse(testFile, []byte(yaml))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return f
}

const productExample = `workflows:
  - name: prepare
    provider: bash            # bash | docker | python
    commands:
      - ./download.sh
    artifacts: [data]
  - name: train
    provider: docker
    image: python:3.12
    commands: [python train.py --epochs ${{ epochs }}]
    depends-on: [prepare]
    variables: {epochs: 10}
    resources:
      cpu: 4
      memory: 16GB
      gpu: 1
      interruptible: true
      shm_size: 1GB
    artifacts: [model]
    env: {KEY: value}
`

func TestResolve(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		yaml      string
		workflow  string
		overrides map[string]string
		want      []api.JobSpec
	}{
		{
			name:     "product example",
			yaml:     productExample,
			workflow: "train",
			want: []api.JobSpec{
				{Workflow: "prepare", Provider: "bash", Commands: []string{"./download.sh"}, Artifacts: []string{"data"}},
				{
					Workflow: "train", Provider: "docker", Image: "python:3.12",
					Commands:  []string{"python train.py --epochs 10"},
					Env:       map[string]string{"KEY": "value"},
					DependsOn: []string{"prepare"},
					Artifacts: []string{"model"},
					Resources: api.Resources{CPU: 4, MemoryMiB: 16384, ShmSizeMiB: 1024, GPU: &api.GPURequest{Count: 1}, Interruptible: true},
					Variables: map[string]string{"epochs": "10"},
				},
			},
		},
		{
			name:      "override",
			yaml:      productExample,
			workflow:  "train",
			overrides: map[string]string{"epochs": "20"},
			want: []api.JobSpec{
				{Workflow: "prepare", Provider: "bash", Commands: []string{"./download.sh"}, Artifacts: []string{"data"}},
				{
					Workflow: "train", Provider: "docker", Image: "python:3.12",
					Commands:  []string{"python train.py --epochs 20"},
					Env:       map[string]string{"KEY": "value"},
					DependsOn: []string{"prepare"},
					Artifacts: []string{"model"},
					Resources: api.Resources{CPU: 4, MemoryMiB: 16384, ShmSizeMiB: 1024, GPU: &api.GPURequest{Count: 1}, Interruptible: true},
					Variables: map[string]string{"epochs": "20"},
				},
			},
		},
		{
			name:     "dependency alone",
			yaml:     productExample,
			workflow: "prepare",
			want: []api.JobSpec{
				{Workflow: "prepare", Provider: "bash", Commands: []string{"./download.sh"}, Artifacts: []string{"data"}},
			},
		},
		{
			name: "variables everywhere, top-level and workflow-level",
			yaml: `variables:
  tag: "3.12"
  dir: out
  who: top
workflows:
  - name: a
    provider: docker
    image: python:${{ tag }}
    variables: {who: a, n: 3}
    commands:
      - echo ${{who}} ${{ variables.n }} $${{ literal }}
    env:
      - OUT=${{ dir }}/x
      - EMPTY=
    artifacts: ["${{ dir }}", "${{ dir }}/", "./${{ dir }}"]
`,
			workflow:  "a",
			overrides: map[string]string{"n": "4", "dir": "res"},
			want: []api.JobSpec{{
				Workflow: "a", Provider: "docker", Image: "python:3.12",
				Commands:  []string{"echo a 4 ${{ literal }}"},
				Env:       map[string]string{"OUT": "res/x", "EMPTY": ""},
				Artifacts: []string{"res"},
				Variables: map[string]string{"tag": "3.12", "dir": "res", "who": "a", "n": "4"},
			}},
		},
		{
			name: "python provider",
			yaml: `workflows:
  - name: p
    provider: python
    version: 3.10
    requirements: requirements.txt
    python_script: src/train model.py
    args: --epochs ${{ epochs }} --name "a b" 'c d' e\ f
    variables: {epochs: "1; rm -rf /"}
    commands: [echo setup]
`,
			workflow: "p",
			want: []api.JobSpec{{
				Workflow: "p", Provider: "python", Image: "python:3.10",
				Commands: []string{
					"pip install -r requirements.txt",
					"echo setup",
					`python3 'src/train model.py' --epochs '1; rm -rf /' --name 'a b' 'c d' 'e f'`,
				},
				Variables: map[string]string{"epochs": "1; rm -rf /"},
			}},
		},
		{
			name: "python provider defaults, args as a list",
			yaml: `workflows:
  - name: p
    provider: python
    file: train.py
    args: [--x, "it's"]
`,
			workflow: "p",
			want: []api.JobSpec{{
				Workflow: "p", Provider: "python", Image: "python:" + DefaultPythonVersion,
				Commands: []string{`python3 train.py --x 'it'\''s'`},
			}},
		},
		{
			name: "gpu map, memory bare number, single-string fields",
			yaml: `workflows:
  - name: g
    provider: bash
    commands: nvidia-smi
    artifacts: out
    depends-on: h
    resources:
      memory: 2048
      gpu: {name: A100, memory: 40GB}
  - name: h
    provider: bash
    commands: [ls]
`,
			workflow: "g",
			want: []api.JobSpec{
				{Workflow: "h", Provider: "bash", Commands: []string{"ls"}},
				{
					Workflow: "g", Provider: "bash", Commands: []string{"nvidia-smi"},
					Artifacts: []string{"out"}, DependsOn: []string{"h"},
					Resources: api.Resources{MemoryMiB: 2048, GPU: &api.GPURequest{Count: 1, Name: "A100", MemoryMiB: 40960}},
				},
			},
		},
		{
			name: "gpu zero is no gpu",
			yaml: `workflows:
  - name: g
    provider: bash
    commands: [ls]
    resources: {gpu: 0}
`,
			workflow: "g",
			want:     []api.JobSpec{{Workflow: "g", Provider: "bash", Commands: []string{"ls"}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := mustParse(t, tt.yaml)
			got, err := f.Resolve(tt.workflow, tt.overrides)
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Resolve:\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestResolveMergeKeys(t *testing.T) {
	t.Parallel()
	f := mustParse(t, `workflows:
  - &a
    name: a
    provider: docker
    image: ubuntu
    commands: &cmds [ls, pwd]
  - <<: *a
    name: b
    image: alpine
    commands: *cmds
`)
	got, err := f.Resolve("b", nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []api.JobSpec{{Workflow: "b", Provider: "docker", Image: "alpine", Commands: []string{"ls", "pwd"}}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}

	// Anchors kept under an x- key, merged as a list.
	f = mustParse(t, `x-defaults: &defaults
  provider: bash
  resources: {cpu: 2}
x-env: &env
  env: {A: "1"}
workflows:
  - <<: [*defaults, *env]
    name: c
    commands: [ls]
`)
	got, err = f.Resolve("c", nil)
	if err != nil {
		t.Fatal(err)
	}
	want = []api.JobSpec{{Workflow: "c", Provider: "bash", Commands: []string{"ls"}, Env: map[string]string{"A": "1"}, Resources: api.Resources{CPU: 2}}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

// TestResolveOrder checks that dependencies come first, ties in file order,
// and that the order does not change from one call to the next.
func TestResolveOrder(t *testing.T) {
	t.Parallel()
	f := mustParse(t, `workflows:
  - {name: d, provider: bash, commands: [ls], depends-on: [b, c]}
  - {name: c, provider: bash, commands: [ls], depends-on: [a]}
  - {name: b, provider: bash, commands: [ls], depends-on: [a]}
  - {name: a, provider: bash, commands: [ls]}
  - {name: e, provider: bash, commands: [ls], depends-on: [a]}
`)
	for range 20 {
		specs, err := f.Resolve("d", nil)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, s := range specs {
			names = append(names, s.Workflow)
		}
		if got, want := strings.Join(names, " "), "a c b d"; got != want {
			t.Fatalf("order = %q, want %q", got, want)
		}
	}
	if got, want := strings.Join(f.Names(), " "), "d c b a e"; got != want {
		t.Errorf("Names = %q, want %q", got, want)
	}
}

func TestResolveErrors(t *testing.T) {
	t.Parallel()
	f := mustParse(t, productExample+`  - name: out
    provider: bash
    commands: [ls]
    variables: {dir: ok}
    artifacts: ["${{ dir }}"]
`)
	tests := []struct {
		name      string
		workflow  string
		overrides map[string]string
		want      []string
	}{
		{name: "unknown workflow", workflow: "trian", want: []string{`no workflow "trian"`, "prepare, train, out"}},
		{name: "unknown variable", workflow: "train", overrides: map[string]string{"epoch": "1"}, want: []string{`unknown variable "epoch"`, "known variables are: epochs"}},
		{name: "no variables", workflow: "prepare", overrides: map[string]string{"epochs": "1"}, want: []string{`unknown variable "epochs"`, "declare no variables"}},
		{name: "override makes artifact escape", workflow: "out", overrides: map[string]string{"dir": "../x"}, want: []string{testFile + ":25:", "outside the working directory"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := f.Resolve(tt.workflow, tt.overrides)
			if err == nil {
				t.Fatal("Resolve succeeded")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestVariables(t *testing.T) {
	t.Parallel()
	f := mustParse(t, `variables: {seed: 1, lr: "0.1"}
workflows:
  - {name: a, provider: bash, commands: [ls], variables: {lr: "0.2", n: 5}}
  - {name: b, provider: bash, commands: [ls], depends-on: [a], variables: {lr: "0.3"}}
`)
	got, err := f.Variables("b")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"seed": "1", "lr": "0.3", "n": "5"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Variables = %v, want %v", got, want)
	}
	if _, err := f.Variables("nope"); err == nil {
		t.Error("Variables of an unknown workflow succeeded")
	}
}

func TestLoad(t *testing.T) {
	t.Parallel()
	t.Run("missing", func(t *testing.T) {
		t.Parallel()
		_, err := Load(t.TempDir())
		if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "dstack init") {
			t.Fatalf("Load = %v, want ErrNotFound mentioning dstack init", err)
		}
	})
	for _, name := range []string{"workflows.yaml", "workflows.yml"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			if err := os.MkdirAll(filepath.Join(dir, ".dstack"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, ".dstack", name), Sample(), 0o644); err != nil {
				t.Fatal(err)
			}
			f, err := Load(dir)
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(f.Names(), " "); got != "prepare train" {
				t.Errorf("Names = %q", got)
			}
		})
	}
	t.Run("error names the path", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		if err := os.MkdirAll(filepath.Join(dir, ".dstack"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(Path(dir), []byte("workflows: [\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := Load(dir)
		if err == nil || !strings.Contains(err.Error(), Path(dir)+":") {
			t.Fatalf("Load = %v, want an error naming %s", err, Path(dir))
		}
	})
}

// TestSample runs the sample's commands with sh, the way a shell executor
// would, dependencies first, and checks the artifacts.
func TestSample(t *testing.T) {
	t.Parallel()
	f := mustParse(t, string(Sample()))
	if got := strings.Join(f.Names(), " "); got != "prepare train" {
		t.Fatalf("Names = %q", got)
	}
	specs, err := f.Resolve("train", map[string]string{"epochs": "2"})
	if err != nil {
		t.Fatal(err)
	}
	if len(specs) != 2 || specs[1].DependsOn[0] != "prepare" || specs[0].Artifacts[0] != "data" {
		t.Fatalf("unexpected specs %+v", specs)
	}
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh to run the sample with")
	}
	dir := t.TempDir()
	var out strings.Builder
	for _, spec := range specs {
		if spec.Provider != "bash" || spec.Image != "" {
			t.Errorf("%s: provider %q image %q, want bash and no image", spec.Workflow, spec.Provider, spec.Image)
		}
		for _, c := range spec.Commands {
			cmd := exec.Command(sh, "-c", c)
			cmd.Dir = dir
			cmd.Stdout = &out
			cmd.Stderr = &out
			if err := cmd.Run(); err != nil {
				t.Fatalf("%s: %q: %v\n%s", spec.Workflow, c, err, out.String())
			}
		}
	}
	result, err := os.ReadFile(filepath.Join(dir, "model", "result.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(result), "sum=5050\nepochs=2\n"; got != want {
		t.Errorf("result.txt = %q, want %q", got, want)
	}
	for _, want := range []string{"prepared 100 numbers", "epoch 1/2", "epoch 2/2"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output %q does not contain %q", out.String(), want)
		}
	}
}

func TestSplitWordsQuote(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"  a  b ", []string{"a", "b"}},
		{`'a b' "c d" e\ f`, []string{"a b", "c d", "e f"}},
		{`"a\"b\\c\$d\e"`, []string{`a"b\c$d\e`}},
		{`a'b'"c"`, []string{"abc"}},
		{`''`, []string{""}},
	}
	for _, tt := range tests {
		got, err := splitWords(tt.in)
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("splitWords(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	for _, s := range []string{"", "a", "a b", "it's", `a"b`, "$HOME", "`x`", "a\nb", "--x=1", "*"} {
		got, err := splitWords(shellQuote(s))
		if err != nil || len(got) != 1 || got[0] != s {
			t.Errorf("splitWords(shellQuote(%q)) = %q, %v", s, got, err)
		}
	}
}
