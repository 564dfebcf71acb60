package api

import (
	"fmt"
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
