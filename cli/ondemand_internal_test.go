package cli

import (
	"strings"
	"testing"
)

func TestIsYes(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]bool{
		"y\n": true, "Y": true, " yes \r\n": true, "YES\n": true,
		"": false, "\n": false, "n\n": false, "no": false, "yess": false, "y es": false,
	} {
		if got := isYes(in); got != want {
			t.Errorf("isYes(%q) = %v, want %v", in, got, want)
		}
	}
}

// FuzzIsYes: only y or yes, in any case and with surrounding space, is a
// yes; everything else leaves the instances alone.
func FuzzIsYes(f *testing.F) {
	for _, s := range []string{"y", "yes\n", "n", "", "Ye", "\x00y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		w := strings.ToLower(strings.TrimSpace(s))
		if isYes(s) != (w == "y" || w == "yes") {
			t.Fatalf("isYes(%q) = %v", s, isYes(s))
		}
	})
}
