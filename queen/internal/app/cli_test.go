package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"rbee.dev/hive/agent"
	"rbee.dev/queen/internal/app"
	"rbee.dev/queen/internal/cli"
	"rbee.dev/shared/api"
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
	// Limits are shown when made and listed.
	if code, out, _ := rbee("keys", "create", "--name", "capped", "--scopes", "infer", "--rpm", "5", "--max-concurrent", "2"); code != 0 || !strings.Contains(out, "limits  rpm=5 max-concurrent=2\n") {
		t.Fatalf("keys create with limits: exit %d, %q", code, out)
	}
	if code, out, _ := rbee("keys", "ls"); code != 0 || !strings.Contains(out, "rpm=5 max-concurrent=2") {
		t.Fatalf("keys ls: exit %d, %q", code, out)
	}
	if code, _, errOut := rbee("keys", "create", "--name", "bad", "--scopes", "infer", "--tpm", "-1"); code == 0 || !strings.Contains(errOut, "tpm must not be negative") {
		t.Fatalf("negative tpm: exit %d, %q", code, errOut)
	}
	code, out, _ = rbee("keys", "create", "--name", "ci", "--scopes", "read")
	if code != 0 || !strings.Contains(out, "rbee_") {
		t.Fatalf("keys create: exit %d, %q", code, out)
	}
	env["RBEE_TOKEN"] = strings.TrimSpace(strings.SplitN(strings.SplitN(out, "key     ", 2)[1], "\n", 2)[0])
	// A key without admin lists only its own jobs.
	if code, out, _ := rbee("jobs", "ls"); code != 0 || strings.Contains(out, "hive_check") {
		t.Fatalf("jobs ls with a read key: exit %d, %q", code, out)
	}
	if code, _, errOut := rbee("run", "--hive", "h1", "--", "true"); code == 0 || !strings.Contains(errOut, "admin") {
		t.Fatalf("run with a read key: exit %d, %q", code, errOut)
	}
}

// --label places a job on a hive carrying the label, every time.
func TestCLILabels(t *testing.T) {
	ns := mustNATS(t)
	base, _ := mustQueen(t, ns.ClientURL())
	mustHive(t, base, ns.ClientURL(), "plain")
	mustHive(t, base, ns.ClientURL(), "big", func(c *agent.Config) { c.Labels = map[string]string{"gpu": "4090"} })
	env := map[string]string{"RBEE_QUEEN": base}
	for i := 0; i < 4; i++ {
		var out, errb bytes.Buffer
		code := cli.Run(context.Background(), []string{"--json", "check", "--label", "gpu=4090", "--events", "1"},
			func(k string) string { return env[k] }, strings.NewReader(""), &out, &errb)
		var sum struct {
			JobID string `json:"job_id"`
			State string `json:"state"`
		}
		if code != 0 || json.Unmarshal(out.Bytes(), &sum) != nil || sum.State != api.StateDone {
			t.Fatalf("check --label: exit %d, %q %q", code, out.String(), errb.String())
		}
		var rec api.Job
		do(t, "GET", base+"/v1/jobs/"+sum.JobID, nil, &rec)
		if rec.Hive != "big" || rec.Request.Labels["gpu"] != "4090" {
			t.Fatalf("job %d ran on %q with labels %v", i, rec.Hive, rec.Request.Labels)
		}
	}
	var out, errb bytes.Buffer
	if code := cli.Run(context.Background(), []string{"check", "--label", "gpu"}, func(k string) string { return env[k] },
		strings.NewReader(""), &out, &errb); code != 2 || !strings.Contains(errb.String(), "KEY=VALUE") {
		t.Fatalf("bad --label: exit %d, %q", code, errb.String())
	}
}
