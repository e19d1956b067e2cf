package app_test

import (
	"os/exec"
	"strings"
	"testing"
)

// goList runs go list with args and returns its lines.
func goList(t *testing.T, args ...string) []string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool")
	}
	out, err := exec.Command(goTool, append([]string{"list"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("go list %v: %v\n%s", args, err, out)
	}
	return strings.Split(strings.TrimSpace(string(out)), "\n")
}

// The hive never depends on the queen, and the queen's production code
// imports the hive only here, where it wires the in-process local hive,
// and only its agent.
func TestImportRules(t *testing.T) {
	for _, line := range goList(t, "-deps", "rbee.dev/hive/...") {
		if strings.HasPrefix(line, "rbee.dev/queen") {
			t.Errorf("the hive depends on %s", line)
		}
	}
	for _, line := range goList(t, "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, "rbee.dev/queen/...") {
		pkg, imports, _ := strings.Cut(line, " ")
		for _, imp := range strings.Fields(imports) {
			if !strings.HasPrefix(imp, "rbee.dev/hive/") {
				continue
			}
			if pkg != "rbee.dev/queen/internal/app" || imp != "rbee.dev/hive/agent" {
				t.Errorf("%s imports %s", pkg, imp)
			}
		}
	}
}
