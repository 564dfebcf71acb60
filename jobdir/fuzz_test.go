package jobdir_test

import (
	"io"
	"strings"
	"testing"
)

// FuzzPaths gives Open, Files and WriteFile arbitrary paths in a directory
// full of symbolic links, in and out, and checks that nothing of the
// outside is ever read or written.
func FuzzPaths(f *testing.F) {
	for _, s := range []string{"model", "lnk/secret", "a/secret", "up/outside/secret", "../outside/secret", "in/x", "self/self/model/w",
		"model/s", "chain/secret", ".", "", "/etc/passwd", "a/../lnk", "in/../../outside/secret", "model/../../outside/secret", "x\x00y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		d, outside := setup(t, map[string]string{
			"model/w": "w", "model/s": "->../../outside/secret", "model/abs": "->@/secret",
			"lnk": "->../outside", "abs": "->@", "a": "->b", "b": "->../outside", "self": "->.", "up": "->self/..",
			"in": "->model", "chain": "->in/../lnk", "loop1": "->loop2", "loop2": "->loop1",
		})
		check := func(what string, r io.Reader) {
			b, _ := io.ReadAll(r)
			if strings.Contains(string(b), secret) {
				t.Fatalf("%s of %q read the outside", what, name)
			}
		}
		if fl, err := d.Open(name); err == nil {
			check("Open", fl)
			fl.Close()
		}
		if files, _, err := d.Files(name); err == nil {
			for _, p := range files {
				fl, err := d.Open(p)
				if err != nil {
					continue
				}
				check("Files", fl)
				fl.Close()
			}
		}
		_, _ = d.WriteFile(name, strings.NewReader("written"), 0o644)
		if got := tree(t, outside); len(got) != 1 || got["secret"] != secret {
			t.Fatalf("WriteFile(%q) changed the outside: %v", name, got)
		}
	})
}
