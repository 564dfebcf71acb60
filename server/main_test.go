package server_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that every test stops what it started: no goroutine of
// a server, its loops or its autoscaler outlives the tests.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
