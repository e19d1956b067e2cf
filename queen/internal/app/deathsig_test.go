package app_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"rbee.dev/shared/api"
)

// A command started by the run operation dies with its hive, even when the
// hive is killed outright and stops nothing itself.
func TestRunChildDiesWithHive(t *testing.T) {
	if testing.Short() {
		t.Skip("kills a hive process")
	}
	ns := mustNATS(t)
	base, _ := mustQueen(t, ns.ClientURL())
	hive := hiveProcess(t, base, ns.ClientURL(), "h1", "--allow-run")
	job := submit(t, base, api.JobRequest{Operation: api.OpRun, Hive: "h1", Payload: &api.Run{Command: []string{"sh", "-c", "echo pid $$; exec sleep 300"}}})
	pid := 0
	waitFor(t, 10*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		frames, _, _ := sse(t, ctx, base, job, 0, 0)
		for _, f := range frames {
			if m, ok := strings.CutPrefix(f.event(t).Message, "pid "); ok {
				_, _ = fmt.Sscan(m, &pid)
			}
		}
		return pid > 0
	})
	if !alive(pid) {
		t.Fatalf("the command (pid %d) is not running", pid)
	}
	if err := hive.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = hive.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("the command (pid %d) outlived its hive", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// alive reports whether pid runs; a zombie waiting for its new parent to
// reap it does not count.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i > 0 && i+2 < len(b) && b[i+2] != 'Z' && b[i+2] != 'X'
}
