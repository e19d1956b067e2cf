package agent

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// slowWriter counts lines, and takes its time over the first write the way
// a narrator does while NATS elects a new stream leader.
type slowWriter struct {
	mu    sync.Mutex
	stall time.Duration
	buf   bytes.Buffer
}

func (w *slowWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stall > 0 {
		time.Sleep(w.stall)
		w.stall = 0
	}
	return w.buf.Write(b)
}

func (w *slowWriter) lines() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Count(w.buf.String(), "\n")
}

// A command that writes all its output and exits while the hive is slow to
// narrate it (NATS failing over) has every line read all the same: the
// output waiting in the pipe is not thrown away when the command exits.
func TestExecuteReadsOutputPastSlowNarration(t *testing.T) {
	cmd := exec.Command("sh", "-c", "i=0; while [ $i -lt 3000 ]; do echo line $i; i=$((i+1)); done; echo oops >&2")
	cmd.SysProcAttr = runProcAttr()
	stdout, stderr := &slowWriter{stall: 3 * time.Second}, &slowWriter{}
	if err := execute(cmd, stdout, stderr, func(int) {}, make(chan struct{})); err != nil {
		t.Fatal(err)
	}
	if n := stdout.lines(); n != 3000 {
		t.Fatalf("%d lines of 3000 read", n)
	}
	if n := stderr.lines(); n != 1 {
		t.Fatalf("%d lines of stderr, want 1", n)
	}
}

// A process that left the command's group and keeps its output open does
// not hold the job for long once the command has exited.
func TestExecuteLeavesEscapedOutputHolder(t *testing.T) {
	if _, err := exec.LookPath("setsid"); err != nil {
		t.Skip("no setsid")
	}
	pidFile := filepath.Join(t.TempDir(), "pid")
	cmd := exec.Command("sh", "-c", `setsid sh -c 'echo $$ > "$0"; exec sleep 30' "$0" & sleep 0.3; echo hi`, pidFile)
	cmd.SysProcAttr = runProcAttr()
	t.Cleanup(func() {
		if b, err := os.ReadFile(pidFile); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	stdout := &slowWriter{}
	start := time.Now()
	if err := execute(cmd, stdout, &slowWriter{}, func(int) {}, make(chan struct{})); err != nil && !strings.Contains(err.Error(), "WaitDelay") {
		t.Fatal(err)
	}
	if d := time.Since(start); d < outputIdle || d > outputIdle+3*time.Second {
		t.Fatalf("held %s", d)
	}
	if n := stdout.lines(); n != 1 {
		t.Fatalf("%d lines of 1", n)
	}
}
