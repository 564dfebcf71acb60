package runnercli

import (
	"testing"

	"github.com/dstackai/dstack/internal/flaghelp"
)

// TestFlagUsagesShowNoPhrasesAsValueNames: no flag of dstack-runner shows
// a backquoted command of its usage as its value's name.
func TestFlagUsagesShowNoPhrasesAsValueNames(t *testing.T) {
	t.Parallel()
	for _, p := range flaghelp.Check(newRoot(Env{})) {
		t.Error(p)
	}
}
