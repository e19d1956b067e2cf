package deploycheck_test

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// Queens and child processes started by a test must be gone with it.
	goleak.VerifyTestMain(m)
}
