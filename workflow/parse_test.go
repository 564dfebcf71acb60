package workflow

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

const testFile = ".dstack/workflows.yaml"

// TestParseErrors checks that each mistake is reported at its line, with the
// field and a hint.
func TestParseErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		yaml string
		want []string // substrings of the message
		line int      // line of the first problem
	}{
		{
			name: "malformed yaml",
			yaml: "workflows:\n  - name: a\n    provider: bash\n    commands: echo a: b\n",
			want: []string{testFile + ":4:", "invalid YAML", "mapping values are not allowed"},
			line: 4,
		},
		{
			name: "bad indentation",
			yaml: "workflows:\n  - name: a\n    provider: bash\n  commands: [ls]\n",
			want: []string{testFile + ":4:", "invalid YAML"},
			line: 4,
		},
		{
			name: "unclosed flow list",
			yaml: "workflows:\n  - name: a\n    provider: bash\n    commands: [ls\n",
			want: []string{"invalid YAML"},
			line: 4,
		},
		{
			name: "tab indentation",
			yaml: "workflows:\n\t- name: a\n",
			want: []string{"invalid YAML"},
			line: 2,
		},
		{
			name: "empty file",
			yaml: "",
			want: []string{"empty", "dstack init"},
		},
		{
			name: "not a mapping",
			yaml: "- a\n- b\n",
			want: []string{"expected a mapping"},
			line: 1,
		},
		{
			name: "unknown top-level key",
			yaml: "workflow:\n  - name: a\n",
			want: []string{`unknown key "workflow"`, `did you mean "workflows"`},
			line: 1,
		},
		{
			name: "missing workflows",
			yaml: "variables: {a: 1}\n",
			want: []string{"missing workflows"},
			line: 1,
		},
		{
			name: "workflows not a list",
			yaml: "workflows:\n  a: b\n",
			want: []string{"workflows: expected a list"},
			line: 2,
		},
		{
			name: "empty workflows",
			yaml: "workflows: []\n",
			want: []string{"the list is empty"},
			line: 1,
		},
		{
			name: "typo in workflow key",
			yaml: "workflows:\n  - name: a\n    provider: bash\n    comands: [ls]\n",
			want: []string{`workflow "a"`, `unknown key "comands"`, `did you mean "commands"`},
			line: 4,
		},
		{
			name: "unknown provider",
			yaml: "workflows:\n  - name: a\n    provider: conda\n    commands: [ls]\n",
			want: []string{"provider: unknown provider \"conda\"", "bash, docker, python"},
			line: 3,
		},
		{
			name: "missing provider",
			yaml: "workflows:\n  - name: a\n    commands: [ls]\n",
			want: []string{"provider: missing", "bash, docker, python"},
			line: 2,
		},
		{
			name: "missing name",
			yaml: "workflows:\n  - provider: bash\n    commands: [ls]\n",
			want: []string{"name: missing"},
			line: 2,
		},
		{
			name: "bad name",
			yaml: "workflows:\n  - name: a b\n    provider: bash\n    commands: [ls]\n",
			want: []string{"not a valid workflow name"},
			line: 2,
		},
		{
			name: "duplicate names",
			yaml: "workflows:\n  - name: a\n    provider: bash\n    commands: [ls]\n  - name: a\n    provider: bash\n    commands: [ls]\n",
			want: []string{"defined twice (first at line 2)"},
			line: 5,
		},
		{
			name: "duplicate key",
			yaml: "workflows:\n  - name: a\n    provider: bash\n    commands: [ls]\n    commands: [pwd]\n",
			want: []string{"commands: given twice"},
			line: 5,
		},
		{
			name: "bash without commands",
			yaml: "workflows:\n  - name: a\n    provider: bash\n",
			want: []string{"commands: missing"},
			line: 2,
		},
		{
			name: "empty commands",
			yaml: "workflows:\n  - name: a\n    provider: bash\n    commands: []\n",
			want: []string{"commands: the list is empty"},
			line: 2,
		},
		{
			name: "null commands",
			yaml: "workflows:\n  - name: a\n    provider: bash\n    commands:\n",
			want: []string{"commands: expected a list, found nothing"},
			line: 4,
		},
		{
			name: "empty command",
			yaml: "workflows:\n  - name: a\n    provider: bash\n    commands: ['  ']\n",
			want: []string{"must not be empty"},
			line: 4,
		},
		{
			name: "bash with image",
			yaml: "workflows:\n  - name: a\n    provider: bash\n    image: ubuntu\n    commands: [ls]\n",
			want: []string{"image: the bash provider does not take an image", "provider: docker"},
			line: 4,
		},
		{
			name: "docker without image",
			yaml: "workflows:\n  - name: a\n    provider: docker\n    commands: [ls]\n",
			want: []string{"image: missing"},
			line: 2,
		},
		{
			name: "docker without commands",
			yaml: "workflows:\n  - name: a\n    provider: docker\n    image: ubuntu\n",
			want: []string{"commands: missing"},
			line: 2,
		},
		{
			name: "docker with file",
			yaml: "workflows:\n  - name: a\n    provider: docker\n    image: ubuntu\n    commands: [ls]\n    file: a.py\n",
			want: []string{"file: not used by the docker provider"},
			line: 2,
		},
		{
			name: "python without file",
			yaml: "workflows:\n  - name: a\n    provider: python\n",
			want: []string{"file: missing"},
			line: 2,
		},
		{
			name: "python with image",
			yaml: "workflows:\n  - name: a\n    provider: python\n    file: a.py\n    image: ubuntu\n",
			want: []string{"image: the python provider runs python:<version>"},
			line: 5,
		},
		{
			name: "python args without file",
			yaml: "workflows:\n  - name: a\n    provider: python\n    commands: [ls]\n    args: [x]\n",
			want: []string{"args: args are passed to file:"},
			line: 2,
		},
		{
			name: "python args bad quoting",
			yaml: "workflows:\n  - name: a\n    provider: python\n    file: a.py\n    args: \"--x 'y\"\n",
			want: []string{"args: unterminated single quote"},
			line: 5,
		},
		{
			name: "python bad version",
			yaml: "workflows:\n  - name: a\n    provider: python\n    file: a.py\n    version: latest\n",
			want: []string{`version: "latest" is not a Python version`},
			line: 5,
		},
		{
			name: "file and python_script",
			yaml: "workflows:\n  - name: a\n    provider: python\n    file: a.py\n    python_script: b.py\n",
			want: []string{"the same setting"},
			line: 5,
		},
		{
			name: "unknown dependency",
			yaml: "workflows:\n  - name: a\n    provider: bash\n    commands: [ls]\n    depends-on: [b]\n",
			want: []string{`depends-on: unknown workflow "b"`, "the workflows are: a"},
			line: 5,
		},
		{
			name: "self dependency",
			yaml: "workflows:\n  - name: a\n    provider: bash\n    commands: [ls]\n    depends-on: [a]\n",
			want: []string{"dependency cycle a -> a"},
			line: 2,
		},
		{
			name: "dependency cycle",
			yaml: `workflows:
  - name: a
    provider: bash
    commands: [ls]
    depends-on: [b]
  - name: b
    provider: bash
    commands: [ls]
    depends-on: [c]
  - name: c
    provider: bash
    commands: [ls]
    depends-on: [a]
`,
			want: []string{"dependency cycle a -> b -> c -> a"},
			line: 2,
		},
		{
			name: "undefined variable",
			yaml: "workflows:\n  - name: a\n    provider: bash\n    variables: {epochs: 1}\n    commands:\n      - echo ok\n      - echo ${{ epoch }}\n",
			want: []string{testFile + ":7:", `workflow "a"`, `commands: undefined variable "epoch"`, "known: epochs"},
			line: 7,
		},
		{
			name: "undefined variable in image",
			yaml: "workflows:\n  - name: a\n    provider: docker\n    image: python:${{ py }}\n    commands: [ls]\n",
			want: []string{`image: undefined variable "py"`, "none are declared"},
			line: 4,
		},
		{
			name: "unterminated reference",
			yaml: "workflows:\n  - name: a\n    provider: bash\n    commands: ['echo ${{ x']\n",
			want: []string{"has no closing }}"},
			line: 4,
		},
		{
			name: "bad reference",
			yaml: "workflows:\n  - name: a\n    provider: bash\n    commands: ['echo ${{ 1x }}']\n",
			want: []string{"is not a variable reference"},
			line: 4,
		},
		{
			name: "variables not a mapping",
			yaml: "workflows:\n  - name: a\n    provider: bash\n    commands: [ls]\n    variables: [a]\n",
			want: []string{"variables: expected a mapping"},
			line: 5,
		},
		{
			name: "variable not a scalar",
			yaml: "variables:\n  a: [1]\nworkflows:\n  - name: a\n    provider: bash\n    commands: [ls]\n",
			want: []string{"variables.a: expected a single value"},
			line: 2,
		},
		{
			name: "bad variable name",
			yaml: "variables:\n  a b: 1\nworkflows:\n  - name: a\n    provider: bash\n    commands: [ls]\n",
			want: []string{"not a valid variable name"},
			line: 2,
		},
		{
			name: "bad memory",
			yaml: "workflows:\n  - name: a\n    provider: bash\n    commands: [ls]\n    resources:\n      memory: lots\n",
			want: []string{`resources.memory: "lots" is not a size`},
			line: 6,
		},
		{
			name: "bad memory unit",
			yaml: "workflows:\n  - name: a\n    provider: bash\n    commands: [ls]\n    resources:\n      memory: 16XB\n",
			want: []string{`unknown unit "XB"`},
			line: 6,
		},
		{
			name: "zero memory",
			yaml: "workflows:\n  - name: a\n    provider: bash\n    commands: [ls]\n    resources:\n      memory: 0GB\n",
			want: []string{"must be more than zero"},
			line: 6,
		},
		{
			name: "negative cpu",
			yaml: "workflows:\n  - name: a\n    provider: bash\n    commands: [ls]\n    resources:\n      cpu: -2\n",
			want: []string{"resources.cpu: must not be negative"},
			line: 6,
		},
		{
			name: "zero cpu",
			yaml: "workflows:\n  - name: a\n    provider: bash\n    commands: [ls]\n    resources:\n      cpu: 0\n",
			want: []string{"resources.cpu: must be at least 1"},
			line: 6,
		},
		{
			name: "fractional cpu",
			yaml: "workflows:\n  - name: a\n    provider: bash\n    commands: [ls]\n    resources:\n      cpu: 1.5\n",
			want: []string{"resources.cpu: expected a whole number"},
			line: 6,
		},
		{
			name: "huge cpu",
			yaml: "workflows:\n  - name: a\n    provider: bash\n    commands: [ls]\n    resources:\n      cpu: 99999999999999999999\n",
			want: []string{"resources.cpu"},
			line: 6,
		},
		{
			name: "unknown resource",
			yaml: "workflows:\n  - name: a\n    provider: bash\n    commands: [ls]\n    resources:\n      gpus: 1\n",
			want: []string{`unknown key "gpus"`, `did you mean "gpu"`},
			line: 6,
		},
		{
			name: "bad gpu",
			yaml: "workflows:\n  - name: a\n    provider: bash\n    commands: [ls]\n    resources:\n      gpu: [1]\n",
			want: []string{"resources.gpu: expected a number of GPUs"},
			line: 6,
		},
		{
			name: "bad gpu key",
			yaml: "workflows:\n  - name: a\n    provider: bash\n    commands: [ls]\n    resources:\n      gpu: {count: 1, mem: 1GB}\n",
			want: []string{`unknown key "mem"`},
			line: 6,
		},
		{
			name: "gpu count zero in map",
			yaml: "workflows:\n  - name: a\n    provider: bash\n    commands: [ls]\n    resources:\n      gpu:\n        count: 0\n",
			want: []string{"resources.gpu.count: must be at least 1"},
			line: 7,
		},
		{
			name: "bad interruptible",
			yaml: "workflows:\n  - name: a\n    provider: bash\n    commands: [ls]\n    resources:\n      interruptible: maybe\n",
			want: []string{"resources.interruptible: expected true or false"},
			line: 6,
		},
		{
			name: "artifact outside",
			yaml: "workflows:\n  - name: a\n    provider: bash\n    commands: [ls]\n    artifacts: [../x]\n",
			want: []string{"artifacts: \"../x\" is outside the working directory"},
			line: 5,
		},
		{
			name: "absolute artifact",
			yaml: "workflows:\n  - name: a\n    provider: bash\n    commands: [ls]\n    artifacts: [/x]\n",
			want: []string{"outside the working directory"},
			line: 5,
		},
		{
			name: "env without equals",
			yaml: "workflows:\n  - name: a\n    provider: bash\n    commands: [ls]\n    env:\n      - FOO\n",
			want: []string{`env: "FOO" has no '='`},
			line: 6,
		},
		{
			name: "bad env key",
			yaml: "workflows:\n  - name: a\n    provider: bash\n    commands: [ls]\n    env: {1A: b}\n",
			want: []string{"not a valid environment variable name"},
			line: 5,
		},
		{
			name: "env set twice",
			yaml: "workflows:\n  - name: a\n    provider: bash\n    commands: [ls]\n    env: [A=1, A=2]\n",
			want: []string{"A is set twice"},
			line: 5,
		},
		{
			name: "workflow not a mapping",
			yaml: "workflows:\n  - a\n",
			want: []string{"expected a workflow"},
			line: 2,
		},
		{
			name: "non-scalar key",
			yaml: "workflows:\n  - name: a\n    provider: bash\n    commands: [ls]\n    ? [x]\n    : y\n",
			want: []string{"keys must be plain words"},
			line: 5,
		},
		{
			name: "bad merge",
			yaml: "workflows:\n  - name: a\n    provider: bash\n    commands: [ls]\n    <<: 3\n",
			want: []string{"a merge key (<<) takes a mapping"},
			line: 5,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f, err := Parse(testFile, []byte(tt.yaml))
			if err == nil {
				t.Fatalf("Parse accepted the file: %v", f.Names())
			}
			msg := err.Error()
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not contain %q", msg, w)
				}
			}
			var perr *Error
			if !errors.As(err, &perr) {
				t.Fatalf("error %T is not an *Error", err)
			}
			if perr.File != testFile {
				t.Errorf("file = %q, want %q", perr.File, testFile)
			}
			if perr.Line != tt.line {
				t.Errorf("line = %d, want %d (%s)", perr.Line, tt.line, msg)
			}
		})
	}
}

// TestParseCollectsErrors checks that several problems are all reported.
func TestParseCollectsErrors(t *testing.T) {
	t.Parallel()
	yaml := `workflows:
  - name: a
    provider: bash
    comands: [ls]
  - name: b
    provider: docker
    commands: [ls]
    resources: {memory: 1ZB}
`
	_, err := Parse(testFile, []byte(yaml))
	if err == nil {
		t.Fatal("Parse accepted the file")
	}
	for _, want := range []string{":4:", `unknown key "comands"`, ":2:", "commands: missing", ":5:", "image: missing", ":8:", "resources.memory"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	var n int
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		n = len(j.Unwrap())
	}
	if n != 4 {
		t.Errorf("got %d errors, want 4:\n%v", n, err)
	}
}

func TestParseManyErrorsAreCapped(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	b.WriteString("workflows:\n")
	for range 100 {
		b.WriteString("  - provider: nope\n")
	}
	_, err := Parse(testFile, []byte(b.String()))
	if err == nil {
		t.Fatal("Parse accepted the file")
	}
	if n := strings.Count(err.Error(), "\n") + 1; n > maxErrors+1 {
		t.Errorf("got %d lines of errors, want at most %d", n, maxErrors+1)
	}
	if !strings.Contains(err.Error(), "too many problems") {
		t.Errorf("error does not say it stopped: %v", err)
	}
}

func TestParseMemory(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    int64
		wantErr string
	}{
		{in: "512MB", want: 512},
		{in: "512mb", want: 512},
		{in: "512M", want: 512},
		{in: "512MiB", want: 512},
		{in: "16GB", want: 16384},
		{in: "16GiB", want: 16384},
		{in: "16 GB", want: 16384},
		{in: "1.5GB", want: 1536},
		{in: ".5GB", want: 512},
		{in: "1TB", want: 1 << 20},
		{in: "1024", want: 1024},
		{in: "2048KB", want: 2},
		{in: "1KB", want: 1},
		{in: "1B", want: 1},
		{in: "1048577B", want: 2},
		{in: "", wantErr: "not a size"},
		{in: "GB", wantErr: "not a size"},
		{in: "1.2.3GB", wantErr: "not a size"},
		{in: "-1GB", wantErr: "more than zero"},
		{in: "0", wantErr: "more than zero"},
		{in: "1PB", wantErr: "unknown unit"},
		{in: "99999999TB", wantErr: "larger than any machine"},
		{in: "1" + strings.Repeat("0", 400), wantErr: "larger than any machine"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			got, err := ParseMemory(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseMemory(%q) = %d, %v; want error containing %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseMemory(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestSuggest(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"comands", "commands"},
		{"Commands", "commands"},
		{"depends_on", "depends-on"},
		{"dependson", "depends-on"},
		{"imag", "image"},
		{"xyz", ""},
		{"a", ""},
	}
	for _, tt := range tests {
		if got := suggest(tt.in, workflowKeys); got != tt.want {
			t.Errorf("suggest(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestParseMergeBudget checks that merge keys that double at every level
// are cut short instead of taking exponential time.
func TestParseMergeBudget(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	b.WriteString("x-0: &a0 {k0: 1}\n")
	for i := 1; i < 40; i++ {
		fmt.Fprintf(&b, "x-%d: &a%d {<<: [*a%d, *a%d], k%d: 1}\n", i, i, i-1, i-1, i)
	}
	b.WriteString("workflows:\n  - name: w\n    provider: bash\n    commands: [ls]\n    env: {<<: *a39}\n")
	_, err := Parse(testFile, []byte(b.String()))
	if err == nil || !strings.Contains(err.Error(), "too many merge keys") {
		t.Fatalf("Parse = %v, want a merge budget error", err)
	}
}
