package cli

import (
	"testing"

	"github.com/dstackai/dstack/internal/flaghelp"
)

// TestFlagUsagesShowNoPhrasesAsValueNames: no flag of dstack (with dstack
// server) shows a backquoted command of its usage as its value's name
// ("--list dstack tags").
func TestFlagUsagesShowNoPhrasesAsValueNames(t *testing.T) {
	t.Parallel()
	e := &Env{}
	e.fill()
	for _, p := range flaghelp.Check(e.newRoot(serverCmd)) {
		t.Error(p)
	}
}
