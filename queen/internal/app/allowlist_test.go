package app_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"rbee.dev/hive/agent"
	"rbee.dev/shared/api"
)

// A hive with a run allowlist starts only the listed executables, however
// a request spells or disguises another one, and executes nothing else.
func TestRunAllowlist(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a cluster")
	}
	echo, err := exec.LookPath("echo")
	if err != nil {
		t.Skip("no echo on PATH")
	}
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh on PATH")
	}
	ns := mustNATS(t)
	base, _ := mustQueen(t, ns.ClientURL())
	mustHive(t, base, ns.ClientURL(), "h1", func(c *agent.Config) {
		c.AllowRun = true
		c.RunAllow = []string{"echo"}
	})

	// A symlink called echo that points at sh is still sh.
	disguise := t.TempDir()
	if err := os.Symlink(sh, filepath.Join(disguise, "echo")); err != nil {
		t.Fatal(err)
	}

	run := func(t *testing.T, dir string, command ...string) api.Event {
		t.Helper()
		job := submit(t, base, api.JobRequest{Operation: api.OpRun, Hive: "h1", Payload: &api.Run{Command: command, Dir: dir}})
		frames, done, _ := sse(t, context.Background(), base, job, 0, 0)
		end := checkComplete(t, frames, done)
		if end.State == api.StateDone {
			for _, f := range frames {
				if e := f.event(t); e.Action == "output" && e.Message == "hi" {
					return end
				}
			}
			t.Fatalf("%q: done without printing hi: %v", command, frames)
		}
		return end
	}

	for _, tc := range []struct {
		name    string
		command []string
	}{
		{"bare name", []string{"echo", "hi"}},
		{"absolute path", []string{echo, "hi"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if end := run(t, "", tc.command...); end.State != api.StateDone {
				t.Fatalf("end %+v, want done", end)
			}
		})
	}
	// A directory that is not there is named, not the program.
	if end := run(t, "/no-such-dir-rbee", "echo", "hi"); end.State != api.StateFailed || !strings.Contains(end.Error, "dir /no-such-dir-rbee") {
		t.Fatalf("missing dir: end %+v", end)
	}

	for _, tc := range []struct {
		name, dir string
		argv0     string
	}{
		{"not listed", "", "sh"},
		{"not listed, absolute", "", sh},
		{"symlink disguised as echo", "", filepath.Join(disguise, "echo")},
		{"relative path", disguise, "./echo"},
		{"missing", "", "no-such-program-rbee"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			marker := filepath.Join(t.TempDir(), "ran")
			end := run(t, tc.dir, tc.argv0, "-c", "touch "+marker)
			if end.State != api.StateFailed || !strings.Contains(end.Error, tc.argv0) || !strings.Contains(end.Error, "nothing was executed") {
				t.Fatalf("end %+v, want failed naming %s and saying nothing was executed", end, tc.argv0)
			}
			if _, err := os.Stat(marker); err == nil {
				t.Fatalf("%s ran although only echo is allowed", tc.argv0)
			}
			t.Log(end.Error)
		})
	}
}
