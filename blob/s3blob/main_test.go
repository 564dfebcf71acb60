package s3blob_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that no goroutine outlives the tests: a Put's upload
// workers end with it, and the fake servers close their connections.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
