package api

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits on artifact paths, the same on every file system a run's artifacts
// may be downloaded to.
const (
	// MaxArtifactNameBytes bounds one element of an artifact path (NAME_MAX
	// on Linux and macOS).
	MaxArtifactNameBytes = 255
	// MaxArtifactPathBytes bounds a whole artifact path.
	MaxArtifactPathBytes = 1024
)

// CheckArtifactPath says what is wrong with an artifact path, or returns nil:
// a path is relative, slash-separated UTF-8, with no empty, "." or ".."
// element, no backslash, no control character (newlines, escapes, NUL),
// elements of at most MaxArtifactNameBytes and MaxArtifactPathBytes in all.
// The server refuses to store such a path and the CLI to write one.
func CheckArtifactPath(p string) error {
	switch {
	case p == "":
		return fmt.Errorf("artifact path is empty")
	case !utf8.ValidString(p):
		return fmt.Errorf("artifact path %q is not valid UTF-8", p)
	case len(p) > MaxArtifactPathBytes:
		return fmt.Errorf("artifact path %.40q... is %d bytes long, more than %d", p, len(p), MaxArtifactPathBytes)
	case strings.HasPrefix(p, "/"):
		return fmt.Errorf("artifact path %q is absolute: it must be relative to the job's working directory", p)
	case strings.Contains(p, `\`):
		return fmt.Errorf(`artifact path %q has a backslash: use "/" between directories`, p)
	}
	if i := strings.IndexFunc(p, unicode.IsControl); i >= 0 {
		r, _ := utf8.DecodeRuneInString(p[i:])
		return fmt.Errorf("artifact path %q has the control character %U: rename the file", p, r)
	}
	for _, el := range strings.Split(p, "/") {
		switch {
		case el == "":
			return fmt.Errorf("artifact path %q has an empty element (a leading, doubled or trailing /)", p)
		case el == "." || el == "..":
			return fmt.Errorf("artifact path %q has a %q element: it must stay inside the working directory", p, el)
		case len(el) > MaxArtifactNameBytes:
			return fmt.Errorf("artifact path %q has a name of %d bytes, more than %d: rename the file", p, len(el), MaxArtifactNameBytes)
		}
	}
	return nil
}
