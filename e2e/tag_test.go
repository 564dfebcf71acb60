package e2e

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	"github.com/dstackai/dstack/api"
)

// chained is a project whose evaluate workflow uses the artifacts of
// prepare from the run tagged data, without running prepare again; stale
// depends on a tag nobody set.
var chained = map[string]string{
	".dstack/workflows.yaml": `workflows:
  - name: prepare
    provider: bash
    commands:
      - mkdir -p data/sub
      - printf '1\n2\n3\n' > data/numbers.txt
      - cat input.txt > data/sub/input.txt
    artifacts: [data]

  - name: evaluate
    provider: bash
    depends-on: [prepare:data]
    commands:
      - |
        sum=0
        while read n; do sum=$((sum + n)); done < data/numbers.txt
        echo "evaluate sum=$sum from $(cat data/sub/input.txt)"

  - name: stale
    provider: bash
    depends-on: ['prepare:nope']
    commands: [ls data]
`,
	"input.txt": "the first code",
}

func TestTaggedRunChains(t *testing.T) {
	eachDB(t, func(t *testing.T, dsn string) {
		c := newCluster(t, dsn)
		c.startRunner("r1")
		dir := project(t, chained)

		r := c.dstack(dir, "run", "prepare")
		if r.code != 0 {
			t.Fatalf("%s", r)
		}
		prepare := runName(t, r.stderr)
		r = c.dstack("", "tag", prepare, "data")
		if r.code != 0 || !strings.Contains(r.stdout, "Tagged run "+prepare+" as data") {
			t.Fatalf("%s", r)
		}

		// The code changes; evaluate still sees what the tagged run wrote.
		changed := project(t, map[string]string{".dstack/workflows.yaml": chained[".dstack/workflows.yaml"], "input.txt": "the second code"})
		r = c.dstack(changed, "run", "evaluate")
		if r.code != 0 {
			t.Fatalf("%s", r)
		}
		if want := "evaluate sum=6 from the first code\n"; r.stdout != want {
			t.Errorf("dstack run evaluate printed %q, want %q", r.stdout, want)
		}
		if want := "==> evaluate gets the artifacts of prepare from run " + prepare + " (tag data)"; !strings.Contains(r.stderr, want) {
			t.Errorf("stderr of dstack run does not say %q:\n%s", want, r.stderr)
		}
		evaluate := c.run(runName(t, r.stderr))
		if evaluate.Status != api.StatusDone || len(evaluate.Jobs) != 1 || evaluate.Jobs[0].Workflow != "evaluate" {
			t.Fatalf("run evaluate = %+v, want done with evaluate only", evaluate)
		}
		if deps := evaluate.Jobs[0].Spec.DependsOnTags; len(deps) != 1 || deps[0].RunName != prepare || deps[0].JobID == "" {
			t.Errorf("evaluate's tagged dependencies = %+v, want prepare of %s", deps, prepare)
		}

		r = c.dstack("", "tags")
		if r.code != 0 || !regexp.MustCompile(`(?m)^data\s+`+prepare+`\s+prepare\s`).MatchString(r.stdout) {
			t.Errorf("dstack tags does not list data on %s:\n%s", prepare, r)
		}
		r = c.dstack("", "tags", "--json")
		var tags []api.Tag
		if err := json.Unmarshal([]byte(r.stdout), &tags); err != nil || len(tags) != 1 || tags[0].Name != "data" || tags[0].RunName != prepare {
			t.Errorf("dstack tags --json = %v, %s", err, r)
		}

		// An unknown tag is refused at `dstack run`, and nothing is submitted.
		before := len(c.runs())
		r = c.dstack(dir, "run", "stale")
		if r.code != 1 || !strings.Contains(r.stderr, `no tag "nope"`) || !strings.Contains(r.stderr, "`dstack tags`") {
			t.Errorf("run with an unknown tag: %s", r)
		}
		if after := len(c.runs()); after != before {
			t.Errorf("a refused run was recorded: %d runs before, %d after", before, after)
		}
	})
}
