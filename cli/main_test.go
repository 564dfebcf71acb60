package cli

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that every test stops what it started: the servers of
// servertest and what the commands start in the background.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
