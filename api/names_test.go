package api_test

import (
	"strings"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
)

func TestCheckAccountName(t *testing.T) {
	for _, ok := range []string{"alice", "a", "bob-2", "ci.token_1", strings.Repeat("x", 64)} {
		if err := api.CheckAccountName("user", ok); err != nil {
			t.Errorf("CheckAccountName(%q) = %v, want nil", ok, err)
		}
	}
	for name, want := range map[string]string{
		"":                      "empty",
		strings.Repeat("x", 65): "the most is 64",
		"Alice":                 "upper-case",
		"-x":                    "start it with a letter",
		"a b":                   "holds ' '",
		"a\nb":                  "control character",
		"a\x1b[31m":             "control character",
		"é":                     "holds 'é'",
		"a\xff":                 "not valid UTF-8",
	} {
		err := api.CheckAccountName("user", name)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "user name") {
			t.Errorf("CheckAccountName(%q) = %v, want an error about the user name saying %q", name, err, want)
		}
	}
}

// FuzzCheckAccountName: an accepted name is 1-64 bytes of [a-z0-9._-]
// starting with a letter or digit; a refused one's message names no raw
// control character (it is quoted).
func FuzzCheckAccountName(f *testing.F) {
	for _, s := range []string{"alice", "", "A", "a\nb", "x.y_z-1", "\x00", "é"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		err := api.CheckAccountName("token", name)
		if err != nil {
			if api.HasControl(err.Error()) {
				t.Fatalf("error for %q holds a control character: %q", name, err)
			}
			return
		}
		if name == "" || len(name) > 64 || strings.ContainsAny(name[:1], "._-") {
			t.Fatalf("accepted %q", name)
		}
		for _, r := range name {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
				t.Fatalf("accepted %q with %q", name, r)
			}
		}
	})
}

func TestParseExpiry(t *testing.T) {
	for in, want := range map[string]time.Duration{"30d": 30 * 24 * time.Hour, "12h": 12 * time.Hour, "90m": 90 * time.Minute, " 1d ": 24 * time.Hour} {
		if got, err := api.ParseExpiry(in); err != nil || got != want {
			t.Errorf("ParseExpiry(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0d", "-1d", "d", "+3d", "1w", "0", "-5m", "99999d", "1e3d", "1x"} {
		if _, err := api.ParseExpiry(in); err == nil || !strings.Contains(err.Error(), "30d") {
			t.Errorf("ParseExpiry(%q) = %v, want an error with an example", in, err)
		}
	}
}

// FuzzParseExpiry: an accepted expiry is within (0, MaxTokenLifetime].
func FuzzParseExpiry(f *testing.F) {
	for _, s := range []string{"30d", "12h", "", "-1d", "9223372036854775807d", "1h30m"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := api.ParseExpiry(s)
		if err == nil && (d <= 0 || d > api.MaxTokenLifetime) {
			t.Fatalf("ParseExpiry(%q) = %v", s, d)
		}
	})
}
