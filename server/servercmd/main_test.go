package servercmd

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that `dstack server` stops everything it started.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
