package cli_test

import (
	"context"
	"strings"
	"testing"
)

func TestRmCommand(t *testing.T) {
	t.Parallel()
	h := setup(t)
	srv := h.serve()
	h.writeFile(".dstack/workflows.yaml", taggedWorkflows)
	startRunner(t, srv, "r1", map[string]*jobScript{
		"prepare": {artifacts: map[string][]byte{"data/numbers.txt": []byte("1\n")}},
	})
	if r := h.run("rm"); r.code != 2 || !strings.Contains(r.stderr, "missing RUN") {
		t.Fatalf("rm without a run: %+v", r)
	}
	first := runName(t, h.run("run", "prepare"))
	second := runName(t, h.run("run", "prepare"))
	if r := h.run("tag", first, "keep"); r.code != 0 {
		t.Fatalf("tag: %+v", r)
	}
	// One refused run does not keep the others; the exit code says so.
	r := h.run("rm", first, second, "no-such-run")
	if r.code != 1 || !strings.HasPrefix(r.stdout, "RUN "+second+" deleted (") ||
		!strings.Contains(r.stderr, "dstack rm -f "+first) || !strings.Contains(r.stderr, `there is no run "no-such-run"`) {
		t.Fatalf("rm of a tagged, a finished and an unknown run: %+v", r)
	}
	r = h.run("rm", "-f", first)
	if r.code != 0 || !strings.HasPrefix(r.stdout, "RUN "+first+" deleted (") {
		t.Fatalf("rm -f: %+v", r)
	}
	if runs, err := srv.Client().RunList(context.Background(), true); err != nil || len(runs) != 0 {
		t.Fatalf("runs after rm: %+v, %v", runs, err)
	}
}
