package cli

import (
	"maps"
	"strings"
	"testing"
)

func TestParseRunArgs(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		args    []string
		want    runArgs
		wantErr string
	}{
		{name: "workflow only", args: []string{"train"}, want: runArgs{Workflow: "train"}},
		{name: "variables both spellings", args: []string{"train", "--epochs", "20", "--lr=0.01"},
			want: runArgs{Workflow: "train", Vars: map[string]string{"epochs": "20", "lr": "0.01"}}},
		{name: "negative value", args: []string{"train", "--lr", "-0.1"},
			want: runArgs{Workflow: "train", Vars: map[string]string{"lr": "-0.1"}}},
		{name: "empty value with equals", args: []string{"train", "--tag="},
			want: runArgs{Workflow: "train", Vars: map[string]string{"tag": ""}}},
		{name: "value with equals", args: []string{"train", "--opt=a=b"},
			want: runArgs{Workflow: "train", Vars: map[string]string{"opt": "a=b"}}},
		{name: "dashed value needs equals", args: []string{"train", "--flag=--x"},
			want: runArgs{Workflow: "train", Vars: map[string]string{"flag": "--x"}}},
		{name: "last wins", args: []string{"train", "--e", "1", "--e", "2"},
			want: runArgs{Workflow: "train", Vars: map[string]string{"e": "2"}}},
		{name: "detach before", args: []string{"-d", "train"}, want: runArgs{Workflow: "train", Detach: true}},
		{name: "detach after", args: []string{"train", "--epochs", "3", "--detach"},
			want: runArgs{Workflow: "train", Detach: true, Vars: map[string]string{"epochs": "3"}}},
		{name: "own options before", args: []string{"--dir", "p", "--max-code-size=1GB", "train"},
			want: runArgs{Workflow: "train", Dir: "p", MaxCodeSize: "1GB"}},
		{name: "max code size after", args: []string{"train", "--max-code-size", "400MB", "--epochs", "3"},
			want: runArgs{Workflow: "train", MaxCodeSize: "400MB", Vars: map[string]string{"epochs": "3"}}},
		{name: "max code size after with equals", args: []string{"train", "--max-code-size=1GiB", "-d"},
			want: runArgs{Workflow: "train", MaxCodeSize: "1GiB", Detach: true}},
		{name: "wait server after", args: []string{"train", "--wait-server", "30s", "--epochs", "3"},
			want: runArgs{Workflow: "train", WaitServer: "30s", Vars: map[string]string{"epochs": "3"}}},
		{name: "unknown option after stays a variable", args: []string{"train", "--max-size", "400MB"},
			want: runArgs{Workflow: "train", Vars: map[string]string{"max-size": "400MB"}}},
		{name: "dir after is a variable", args: []string{"train", "--dir", "data"},
			want: runArgs{Workflow: "train", Vars: map[string]string{"dir": "data"}}},
		{name: "json before", args: []string{"-d", "--json", "train"}, want: runArgs{Workflow: "train", Detach: true, JSON: true}},
		{name: "json at the end", args: []string{"train", "-d", "--json"}, want: runArgs{Workflow: "train", Detach: true, JSON: true}},
		{name: "json before a variable", args: []string{"train", "--json", "--epochs", "3", "-d"},
			want: runArgs{Workflow: "train", Detach: true, JSON: true, Vars: map[string]string{"epochs": "3"}}},
		{name: "json with a value is a variable", args: []string{"train", "--json", "yes"},
			want: runArgs{Workflow: "train", Vars: map[string]string{"json": "yes"}}},
		{name: "help alone", args: []string{"--help"}, want: runArgs{Help: true}},
		{name: "help after", args: []string{"train", "-h"}, want: runArgs{Workflow: "train", Help: true}},

		{name: "no workflow", args: nil, wantErr: "missing WORKFLOW"},
		{name: "only detach", args: []string{"-d"}, wantErr: "missing WORKFLOW"},
		{name: "missing value at end", args: []string{"train", "--epochs"}, wantErr: "--epochs needs a value"},
		{name: "missing value before flag", args: []string{"train", "--epochs", "--lr", "1"}, wantErr: "--epochs needs a value"},
		{name: "second positional", args: []string{"train", "prepare"}, wantErr: `unexpected argument "prepare"`},
		{name: "single dash option", args: []string{"train", "-x"}, wantErr: `unknown option "-x"`},
		{name: "unknown option before", args: []string{"--epochs", "3", "train"}, wantErr: "before the workflow's name"},
		{name: "bad variable name", args: []string{"train", "--9lives", "1"}, wantErr: "not a valid variable name"},
		{name: "bare double dash", args: []string{"train", "--"}, wantErr: "is not a variable"},
		{name: "dir without value", args: []string{"--dir"}, wantErr: "--dir needs a value"},
		{name: "max code size after without value", args: []string{"train", "--max-code-size"}, wantErr: "--max-code-size needs a value"},
		{name: "empty workflow", args: []string{""}, wantErr: "empty"},
		{name: "json without detach", args: []string{"--json", "train"}, wantErr: "--json prints the submitted run and goes with -d"},
		{name: "resume", args: []string{"--resume", "bold-otter-1"}, want: runArgs{Resume: "bold-otter-1"}},
		{name: "resume detached as JSON", args: []string{"-d", "--json", "--resume=r"}, want: runArgs{Resume: "r", Detach: true, JSON: true}},
		{name: "resume with a workflow", args: []string{"--resume", "r", "train"}, wantErr: "takes no workflow or variables"},
		{name: "resume without a run", args: []string{"--resume"}, wantErr: "--resume needs a value"},
		{name: "resume empty", args: []string{"--resume="}, wantErr: "--resume needs the name of a run"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := parseRunArgs(tt.args)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				if _, ok := err.(*usageError); !ok { //nolint:errorlint // the usage error itself, not one wrapping it
					t.Fatalf("err %T is not a usage error", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.want.Vars == nil {
				tt.want.Vars = map[string]string{}
			}
			if !sameRunArgs(got, tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func sameRunArgs(a, b runArgs) bool {
	return a.Workflow == b.Workflow && a.Detach == b.Detach && a.JSON == b.JSON && a.Help == b.Help &&
		a.Dir == b.Dir && a.MaxCodeSize == b.MaxCodeSize && a.WaitServer == b.WaitServer && a.Resume == b.Resume && maps.Equal(a.Vars, b.Vars)
}

// FuzzParseRunArgs checks that the parser never panics, that what it
// accepts is well formed, and that writing it back parses to the same.
func FuzzParseRunArgs(f *testing.F) {
	for _, s := range []string{
		"train", "train --epochs 20", "train --lr=-0.1 -d", "-d --dir x train --a b",
		"train --epochs", "train x", "--help", "train --=1", "--max-code-size 1GB train --x=--y",
		"train --max-code-size 400MB --e 1", "train --max-code-size=1GiB -d", "train --max-code-size", "--wait-server 5s train", "train --wait-server 5s --e 1",
		"-d --json train", "train -d --json", "train --json x", "--json train",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		args := strings.Split(line, " ")
		r, err := parseRunArgs(args)
		if err != nil {
			if _, ok := err.(*usageError); !ok { //nolint:errorlint // the usage error itself, not one wrapping it
				t.Fatalf("error %T is not a usage error: %v", err, err)
			}
			return
		}
		if r.Workflow == "" && !r.Help {
			t.Fatalf("accepted %q without a workflow", args)
		}
		if strings.HasPrefix(r.Workflow, "-") {
			t.Fatalf("workflow %q looks like an option", r.Workflow)
		}
		for k := range r.Vars {
			if !varName.MatchString(k) {
				t.Fatalf("accepted variable name %q", k)
			}
			if optionsAfterWorkflow["--"+k] {
				t.Fatalf("the run's option --%s was taken for a variable", k)
			}
		}
		again, err := parseRunArgs(r.args())
		if err != nil {
			t.Fatalf("%q parsed to %+v, whose args %q do not parse: %v", args, r, r.args(), err)
		}
		if !sameRunArgs(r, again) {
			t.Fatalf("%q parsed to %+v, written back and parsed to %+v", args, r, again)
		}
	})
}
