package api

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxRunnerName is the longest runner name, in bytes.
const MaxRunnerName = 200

// CheckRunnerName says what is wrong with a runner's name, or nil: it is 1
// to MaxRunnerName bytes of UTF-8 without control characters (a name is
// printed in tables and logs, where a newline or an escape sequence would
// forge other lines). The server checks it at registration, the runner
// when it reads its configuration.
func CheckRunnerName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("the runner's name is empty: give one with --name")
	case len(name) > MaxRunnerName:
		return fmt.Errorf("the runner's name is %d bytes long: the most is %d", len(name), MaxRunnerName)
	case !utf8.ValidString(name):
		return fmt.Errorf("the runner's name %q is not valid UTF-8", name)
	case HasControl(name):
		return fmt.Errorf("the runner's name %q holds a control character: use letters, digits and punctuation", name)
	}
	return nil
}

// HasControl reports whether s holds a control character (a newline, a
// tab, an escape, DEL, C1 controls).
func HasControl(s string) bool {
	for _, r := range s {
		if unicode.IsControl(r) {
			return true
		}
	}
	return false
}

// MaxAccountName is the longest user or token name, in bytes.
const MaxAccountName = 64

// CheckAccountName says what is wrong with a user's or a token's name
// (what says which: "user", "token"), or nil: 1 to MaxAccountName
// characters, lowercase letters, digits, '.', '_' and '-', starting with a
// letter or a digit.
func CheckAccountName(what, name string) error {
	switch {
	case name == "":
		return fmt.Errorf("the %s name is empty: give 1 to %d characters of a-z, 0-9, '.', '_' and '-'", what, MaxAccountName)
	case len(name) > MaxAccountName:
		return fmt.Errorf("the %s name is %d characters long: the most is %d", what, len(name), MaxAccountName)
	case !utf8.ValidString(name):
		return fmt.Errorf("the %s name %q is not valid UTF-8: use a-z, 0-9, '.', '_' and '-'", what, name)
	case HasControl(name):
		return fmt.Errorf("the %s name %q holds a control character: use a-z, 0-9, '.', '_' and '-'", what, name)
	}
	for i, r := range name {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
		case i > 0 && (r == '.' || r == '_' || r == '-'):
		case r >= 'A' && r <= 'Z':
			return fmt.Errorf("the %s name %q has an upper-case letter: names are lower case (%q)", what, name, strings.ToLower(name))
		case i == 0 && (r == '.' || r == '_' || r == '-'):
			return fmt.Errorf("the %s name %q starts with %q: start it with a letter or a digit", what, name, r)
		default:
			return fmt.Errorf("the %s name %q holds %q: use a-z, 0-9, '.', '_' and '-'", what, name, r)
		}
	}
	return nil
}
