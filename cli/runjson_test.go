package cli_test

import (
	"encoding/json"
	"maps"
	"slices"
	"testing"

	"github.com/dstackai/dstack/api"
)

// TestRunDetachedJSON: `dstack run -d --json` prints the submitted run as
// JSON, in the shape of the entries of `dstack ps --json`.
func TestRunDetachedJSON(t *testing.T) {
	t.Parallel()
	h := setup(t)
	h.serve()
	h.writeFile(".dstack/workflows.yaml", testWorkflows)
	h.writeFile("train.py", "print('hi')\n")

	r := h.run("run", "-d", "--json", "train", "--epochs", "2")
	if r.code != 0 {
		t.Fatalf("run -d --json: %+v", r)
	}
	var submitted map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &submitted); err != nil {
		t.Fatalf("run -d --json printed %q, not a JSON object: %v", r.stdout, err)
	}
	var run api.Run
	if err := json.Unmarshal([]byte(r.stdout), &run); err != nil {
		t.Fatal(err)
	}
	if run.Name == "" || run.Workflow != "train" || len(run.Jobs) != 2 || run.Jobs[1].Spec.Variables["epochs"] != "2" {
		t.Errorf("run -d --json: %+v", run)
	}

	r = h.run("ps", "--json")
	var listed []map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &listed); err != nil || len(listed) != 1 {
		t.Fatalf("ps --json: %+v (%v)", r, err)
	}
	if listed[0]["name"] != run.Name {
		t.Errorf("ps --json lists %v, want the run %s", listed[0]["name"], run.Name)
	}
	keys := func(m map[string]any) []string { return slices.Sorted(maps.Keys(m)) }
	if got, want := keys(submitted), keys(listed[0]); !slices.Equal(got, want) {
		t.Errorf("run -d --json has the fields %q, ps --json's entries %q", got, want)
	}

	if r := h.run("run", "--json", "train"); r.code != 2 || r.stdout != "" {
		t.Errorf("run --json without -d: %+v, want a usage error", r)
	}
}
