package app_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"rbee.dev/queen/internal/app"
	"rbee.dev/queen/internal/cli"
)

// The CLI against a real queen and hive: run streams output and exits with
// the command's code, check verifies order, keys manage credentials.
func TestCLIAgainstRealQueen(t *testing.T) {
	ns := mustNATS(t)
	base, _ := mustQueen(t, ns.ClientURL(), func(c *app.Config) { c.AdminKey = testAdminKey })
	mustHive(t, base, ns.ClientURL(), "h1", allowRun)
	env := map[string]string{"RBEE_QUEEN": base, "RBEE_TOKEN": testAdminKey}
	rbee := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := cli.Run(context.Background(), args, func(k string) string { return env[k] }, strings.NewReader(""), &out, &errb)
		return code, out.String(), errb.String()
	}

	code, out, errOut := rbee("run", "--hive", "h1", "--", "sh", "-c", "echo one; echo two >&2; echo three; exit 3")
	if code != 3 || out != "one\nthree\n" || errOut != "two\n" {
		t.Fatalf("run: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if code, out, _ := rbee("check", "--hive", "h1", "--events", "500"); code != 0 || !strings.Contains(out, "in order") {
		t.Fatalf("check: exit %d, %q", code, out)
	}
	code, out, _ = rbee("keys", "create", "--name", "ci", "--scopes", "read")
	if code != 0 || !strings.Contains(out, "rbee_") {
		t.Fatalf("keys create: exit %d, %q", code, out)
	}
	env["RBEE_TOKEN"] = strings.TrimSpace(strings.SplitN(strings.SplitN(out, "key     ", 2)[1], "\n", 2)[0])
	if code, out, _ := rbee("jobs", "ls"); code != 0 || !strings.Contains(out, "hive_check") {
		t.Fatalf("jobs ls with a read key: exit %d, %q", code, out)
	}
	if code, _, errOut := rbee("run", "--hive", "h1", "--", "true"); code == 0 || !strings.Contains(errOut, "admin") {
		t.Fatalf("run with a read key: exit %d, %q", code, errOut)
	}
}
