package workflow

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/dstackai/dstack/api"
)

// Dependencies on tagged runs: depends-on: [WORKFLOW:TAG].

func TestParseTaggedDependencyErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		yaml string
		want []string // substrings of the message
		line int      // line of the first problem
	}{
		{
			name: "tagged dependency without a tag",
			yaml: "workflows:\n  - name: a\n    provider: bash\n    commands: [ls]\n    depends-on:\n      - 'b:'\n",
			want: []string{testFile + ":6:", `workflow "a"`, `depends-on: "b:" is not WORKFLOW or WORKFLOW:TAG`},
			line: 6,
		},
		{
			name: "tagged dependency without a workflow",
			yaml: "workflows:\n  - name: a\n    provider: bash\n    commands: [ls]\n    depends-on: [':data']\n",
			want: []string{`depends-on: ":data" is not WORKFLOW or WORKFLOW:TAG`},
			line: 5,
		},
		{
			name: "tagged dependency with two colons",
			yaml: "workflows:\n  - name: a\n    provider: bash\n    commands: [ls]\n    depends-on: ['b:c:d']\n",
			want: []string{`"b:c:d" is not WORKFLOW or WORKFLOW:TAG`},
			line: 5,
		},
		{
			name: "tagged dependency with a bad tag",
			yaml: "workflows:\n  - name: a\n    provider: bash\n    commands: [ls]\n    depends-on: ['b:-x']\n",
			want: []string{`depends-on: "b:-x": "-x" is not a valid tag`},
			line: 5,
		},
		{
			name: "tagged dependency with a bad workflow name",
			yaml: "workflows:\n  - name: a\n    provider: bash\n    commands: [ls]\n    depends-on: ['b c:data']\n",
			want: []string{`"b c" is not a valid workflow name`},
			line: 5,
		},
		{
			name: "tagged dependency with an overlong tag",
			yaml: "workflows:\n  - name: a\n    provider: bash\n    commands: [ls]\n    depends-on: ['b:" + strings.Repeat("t", 101) + "']\n",
			want: []string{"is not a valid tag", "at most 100"},
			line: 5,
		},
		{
			name: "a workflow both in the run and tagged",
			yaml: "workflows:\n  - name: b\n    provider: bash\n    commands: [ls]\n  - name: a\n    provider: bash\n    commands: [ls]\n    depends-on:\n      - b\n      - b:data\n",
			want: []string{testFile + ":10:", `depends-on: b and b:data both give the artifacts of workflow "b"; keep one`},
			line: 10,
		},
		{
			name: "a workflow under two tags",
			yaml: "workflows:\n  - name: a\n    provider: bash\n    commands: [ls]\n    depends-on: ['b:x', 'b:y']\n",
			want: []string{`b:x and b:y both give the artifacts`},
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
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			var perr *Error
			if !errors.As(err, &perr) {
				t.Fatalf("error %T is not an *Error", err)
			}
			if perr.File != testFile || perr.Line != tt.line || perr.Workflow != "a" || perr.Field != "depends-on" {
				t.Errorf("error at %s:%d workflow %q field %q, want %s:%d workflow \"a\" field depends-on (%v)",
					perr.File, perr.Line, perr.Workflow, perr.Field, testFile, tt.line, err)
			}
		})
	}
}

// TestResolveTaggedDependencies checks that WORKFLOW:TAG adds no job to the
// run: the dependency travels in DependsOnTags, whether or not the file
// defines the workflow, and may name the workflow itself.
func TestResolveTaggedDependencies(t *testing.T) {
	t.Parallel()
	f := mustParse(t, `workflows:
  - name: prepare
    provider: bash
    commands: [./download.sh]
    artifacts: [data]
  - name: train
    provider: bash
    commands: [ls data model]
    depends-on: [prepare:latest-data, ' pretrain : v1.2_b ', train:last]
    artifacts: [model]
  - name: evaluate
    provider: bash
    commands: [ls]
    depends-on: [train, prepare:latest-data]
`)
	specs, err := f.Resolve("train", nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []api.JobSpec{{
		Workflow: "train", Provider: "bash", Commands: []string{"ls data model"}, Artifacts: []string{"model"},
		DependsOnTags: []api.TaggedDependency{
			{Workflow: "prepare", Tag: "latest-data"}, {Workflow: "pretrain", Tag: "v1.2_b"}, {Workflow: "train", Tag: "last"},
		},
	}}
	if !reflect.DeepEqual(specs, want) {
		t.Errorf("Resolve(train) =\n%+v\nwant\n%+v", specs, want)
	}
	specs, err = f.Resolve("evaluate", nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range specs {
		names = append(names, s.Workflow)
	}
	if got := strings.Join(names, " "); got != "train evaluate" {
		t.Errorf("Resolve(evaluate) runs %q, want train evaluate (prepare comes from the tagged run)", got)
	}
	last := specs[len(specs)-1]
	if !reflect.DeepEqual(last.DependsOn, []string{"train"}) || len(last.DependsOnTags) != 1 || last.DependsOnTags[0].String() != "prepare:latest-data" {
		t.Errorf("evaluate depends on %v and %v, want train and prepare:latest-data", last.DependsOn, last.DependsOnTags)
	}
}
