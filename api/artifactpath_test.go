package api_test

import (
	"path"
	"strings"
	"testing"
	"unicode"

	"github.com/dstackai/dstack/api"
)

func TestCheckArtifactPath(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("n", api.MaxArtifactNameBytes)
	for _, tc := range []struct {
		path string
		want string // "" accepts
	}{
		{"model.bin", ""},
		{"data/numbers.txt", ""},
		{"données/é.txt", ""},
		{long, ""},
		{long + "/" + long, ""},
		{long + "x", "more than 255"},
		{"a/" + long + "é", "more than 255"},
		{strings.Repeat("d/", 600) + "f", "more than 1024"},
		{"", "empty"},
		{"/etc/passwd", "absolute"},
		{`a\b`, "backslash"},
		{"a/../b", `".." element`},
		{"./a", `"." element`},
		{"a//b", "empty element"},
		{"a/", "empty element"},
		{"line\nbreak", "control character U+000A"},
		{"esc\x1b[31mred", "control character U+001B"},
		{"nul\x00", "control character U+0000"},
		{"del\x7f", "control character U+007F"},
		{"c1\u0085", "control character U+0085"},
		{"bad\xffutf8", "not valid UTF-8"},
	} {
		err := api.CheckArtifactPath(tc.path)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("CheckArtifactPath(%.60q) = %v, want it accepted", tc.path, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("CheckArtifactPath(%.60q) = %v, want an error saying %q", tc.path, err, tc.want)
		}
	}
}

// FuzzCheckArtifactPath: an accepted path is clean, relative, free of
// control characters and within the limits.
func FuzzCheckArtifactPath(f *testing.F) {
	for _, s := range []string{"a", "a/b", "../x", "a\nb", "/x", `a\b`, "é/ü", strings.Repeat("x", 300)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		if api.CheckArtifactPath(p) != nil {
			return
		}
		if path.Clean(p) != p || path.IsAbs(p) || strings.HasPrefix(p, "../") || p == ".." || p == "." {
			t.Fatalf("accepted %q, which is not a clean relative path", p)
		}
		if strings.ContainsFunc(p, unicode.IsControl) || strings.Contains(p, `\`) {
			t.Fatalf("accepted %q, which has a control character or a backslash", p)
		}
		if len(p) > api.MaxArtifactPathBytes {
			t.Fatalf("accepted %d bytes", len(p))
		}
		for _, el := range strings.Split(p, "/") {
			if len(el) > api.MaxArtifactNameBytes {
				t.Fatalf("accepted a name of %d bytes", len(el))
			}
		}
	})
}
