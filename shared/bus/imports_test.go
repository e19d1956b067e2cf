package bus_test

import (
	"os/exec"
	"strings"
	"testing"
)

// The protocol imports nats.go and nothing of rbee's own: both sides use
// it, so neither can reach the other, or its business, through it.
func TestImportsNothingOfOurs(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool")
	}
	out, err := exec.Command(goTool, "list", "-deps", "rbee.dev/shared/bus").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.HasPrefix(pkg, "rbee.dev/") && pkg != "rbee.dev/shared/bus" {
			t.Errorf("rbee.dev/shared/bus depends on %s", pkg)
		}
	}
}
