package cli_test

import (
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	"github.com/dstackai/dstack/api"
)

const taggedWorkflows = testWorkflows + `  - name: evaluate
    provider: bash
    depends-on: [prepare:latest-data]
    commands: [ls data]
`

func TestTagCommands(t *testing.T) {
	t.Parallel()
	h := setup(t)
	srv := h.serve()
	h.writeFile(".dstack/workflows.yaml", taggedWorkflows)
	startRunner(t, srv, "r1", map[string]*jobScript{
		"prepare":  {artifacts: map[string][]byte{"data/numbers.txt": []byte("1\n")}},
		"evaluate": {logs: []string{"evaluated"}},
	})

	r := h.run("tags")
	if r.code != 0 || r.stdout != "" || !strings.Contains(r.stderr, "No tags yet") {
		t.Fatalf("tags with none: %+v", r)
	}
	// An unknown tag fails `dstack run` before anything is submitted.
	r = h.run("run", "evaluate")
	if r.code != 1 || !strings.Contains(r.stderr, `no tag "latest-data"`) || !strings.Contains(r.stderr, "`dstack tags`") {
		t.Fatalf("run with an unknown tag: %+v", r)
	}
	if runs, err := srv.Client().RunList(context.Background(), true); err != nil || len(runs) != 0 {
		t.Fatalf("runs after a refused submission: %+v, %v", runs, err)
	}

	first := runName(t, h.run("run", "prepare"))
	r = h.run("tag", first, "latest-data")
	if r.code != 0 || r.stdout != "Tagged run "+first+" as latest-data\n" || !strings.Contains(r.stderr, "depends-on: [prepare:latest-data]") {
		t.Fatalf("tag: %+v", r)
	}
	r = h.run("tag", first, "latest-data")
	if r.code != 0 || r.stdout != "Tag latest-data already names run "+first+"\n" {
		t.Fatalf("tag again: %+v", r)
	}

	r = h.run("run", "evaluate")
	if r.code != 0 || r.stdout != "evaluated\n" {
		t.Fatalf("run evaluate: %+v", r)
	}
	if want := "==> evaluate gets the artifacts of prepare from run " + first + " (tag latest-data)"; !strings.Contains(r.stderr, want) {
		t.Errorf("stderr %q does not say %q", r.stderr, want)
	}
	evaluate := waitRun(t, srv.Client(), runName(t, r))
	if len(evaluate.Jobs) != 1 {
		t.Errorf("run evaluate has jobs %+v, want evaluate only (prepare comes from the tag)", evaluate.Jobs)
	}

	// Moving the tag needs --force.
	second := runName(t, h.run("run", "prepare"))
	r = h.run("tag", second, "latest-data")
	if r.code != 1 || !strings.Contains(r.stderr, "already names run "+first) || !strings.Contains(r.stderr, "--force") {
		t.Fatalf("moving without --force: %+v", r)
	}
	r = h.run("tag", "-f", second, "latest-data")
	if r.code != 0 || r.stdout != "Moved tag latest-data from run "+first+" to run "+second+"\n" {
		t.Fatalf("tag -f: %+v", r)
	}
	if r = h.run("tag", second, "v1"); r.code != 0 {
		t.Fatalf("second tag: %+v", r)
	}

	r = h.run("tags")
	if r.code != 0 || !regexp.MustCompile(`TAG\s+RUN\s+WORKFLOWS\s+TAGGED`).MatchString(r.stdout) ||
		!regexp.MustCompile(`(?m)^latest-data\s+`+second+`\s+prepare\s+just now$`).MatchString(r.stdout) ||
		strings.Index(r.stdout, "latest-data") > strings.Index(r.stdout, "v1") {
		t.Fatalf("tags: %+v", r)
	}
	for _, args := range [][]string{{"tags", "--json"}, {"tag", "--list", "--json"}, {"tag", "-l", "--json"}} {
		r = h.run(args...)
		var tags []api.Tag
		if err := json.Unmarshal([]byte(r.stdout), &tags); err != nil || len(tags) != 2 || tags[0].Name != "latest-data" || tags[0].RunName != second {
			t.Fatalf("%v: %v %+v", args, err, r)
		}
	}

	r = h.run("tag", "--delete", "v1")
	if r.code != 0 || r.stdout != "Deleted tag v1 (it named run "+second+")\n" {
		t.Fatalf("tag --delete: %+v", r)
	}
	r = h.run("tag", "--delete", "v1")
	if r.code != 1 || !strings.Contains(r.stderr, `you have no tag "v1"`) {
		t.Fatalf("tag --delete twice: %+v", r)
	}
	r = h.run("tag", "no-such-run", "x")
	if r.code != 1 || !strings.Contains(r.stderr, `no run named "no-such-run"`) {
		t.Fatalf("tag of an unknown run: %+v", r)
	}
}

func TestTagUsageErrors(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"tag"}, "missing RUN and TAG"},
		{[]string{"tag", "run"}, "missing TAG"},
		{[]string{"tag", "a", "b", "c"}, `unexpected argument "c"`},
		{[]string{"tag", "--delete"}, "missing TAG"},
		{[]string{"tag", "--delete", "a", "b"}, `unexpected argument "b"`},
		{[]string{"tag", "--delete", "-f", "a"}, "--delete goes without --force"},
		{[]string{"tag", "--list", "a"}, `unexpected argument "a"`},
		{[]string{"tag", "--list", "--delete"}, "--list goes without"},
		{[]string{"tag", "a", "b", "--json"}, "--json goes with --list"},
		{[]string{"tags", "x"}, `unexpected argument "x"`},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			t.Parallel()
			r := setup(t).run(tt.args...)
			if r.code != 2 || !strings.HasPrefix(r.stderr, "Error: ") || !strings.Contains(r.stderr, tt.want) || !strings.Contains(r.stderr, "--help") {
				t.Errorf("exit code %d, stderr %q; want 2 and %q", r.code, r.stderr, tt.want)
			}
		})
	}
}
