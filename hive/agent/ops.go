package agent

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"rbee.dev/hive/internal/lines"
	"rbee.dev/shared/api"
)

// check emits the requested number of events: the self-test that tests and
// benchmarks use to measure narration end to end.
func (j *job) check(req *api.HiveCheck) error {
	n := api.DefaultCheckEvents
	if req.Events != nil {
		n = *req.Events
	}
	payload := strings.Repeat("x", req.PayloadBytes)
	for i := 1; i <= n; i++ {
		if i&1023 == 0 && j.ctx.Err() != nil {
			return j.ctx.Err()
		}
		err := j.p.Emit(api.Event{
			Actor: "hive_check", Action: "event", Message: fmt.Sprintf("check %d of %d", i, n),
			Payload: payload, Progress: &api.Progress{Done: int64(i), Total: int64(n), Unit: "events"},
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// status reports the hive's inventory as a data event.
func (j *job) status() error {
	return j.p.Data(api.Event{Actor: "hive", Action: "hive_status", Message: "hive inventory", Data: j.a.info(j.ctx)})
}

// safeEnv is the part of the hive's environment a command inherits. The rest
// (NATS credentials, tokens) stays with the hive.
var safeEnv = []string{"PATH", "HOME", "USER", "LANG", "LC_ALL", "TZ", "TMPDIR", "TERM"}

// runCommand runs the request's argv in its own process group, narrates each
// output line, and kills the whole group when the job is cancelled.
func (j *job) runCommand(req *api.Run) error {
	if !j.a.cfg.AllowRun {
		return fmt.Errorf("the run operation is not allowed on hive %s (start it with --allow-run); nothing was executed", j.a.cfg.ID)
	}
	prog, refused := j.a.allowedExecutable(req.Command[0])
	if refused != nil {
		return refused
	}
	cmd := exec.Command(prog, req.Command[1:]...)
	cmd.Args[0] = req.Command[0]
	cmd.SysProcAttr = runProcAttr()
	// The parent-death signal fires when the starting thread ends; Go may
	// end a thread that a goroutine exited while locked to, so this
	// goroutine keeps its thread until the command has been reaped. That
	// costs one OS thread per running command, at most one per slot.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cmd.Dir = req.Dir
	if cmd.Dir == "" {
		cmd.Dir = filepath.Join(j.a.cfg.DataDir, "work")
	} else if fi, err := os.Stat(cmd.Dir); err != nil || !fi.IsDir() {
		// exec would blame the program for a missing directory.
		if err == nil {
			err = errors.New("not a directory")
		}
		return fmt.Errorf("start command: dir %s: %w", cmd.Dir, err)
	}
	for _, k := range safeEnv {
		if v, ok := os.LookupEnv(k); ok {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
	}
	for k, v := range req.Env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	stdout, stderr := j.lines("stdout", api.LevelInfo), j.lines("stderr", api.LevelWarn)
	exited := make(chan struct{})
	err := execute(cmd, stdout, stderr, func(pgid int) {
		_ = j.p.Emit(api.Event{Actor: "run", Action: "spawned", Message: fmt.Sprintf("started %s (pid %d)", req.Command[0], pgid), Level: api.LevelDebug})
		go func() {
			select {
			case <-exited:
			case <-j.ctx.Done():
				_ = syscall.Kill(-pgid, syscall.SIGTERM)
				select {
				case <-exited:
				case <-time.After(time.Second):
					_ = syscall.Kill(-pgid, syscall.SIGKILL)
				}
			}
		}()
	}, exited)
	var start *startError
	if errors.As(err, &start) {
		return fmt.Errorf("start command: %w", start.err)
	}
	stdout.flush()
	stderr.flush()

	var ee *exec.ExitError
	switch {
	case j.ctx.Err() != nil:
		return j.ctx.Err()
	case errors.As(err, &ee):
		code := ee.ExitCode()
		if code < 0 {
			code = 128 + int(ee.Sys().(syscall.WaitStatus).Signal())
		}
		return &exitError{code: code}
	case err != nil:
		return err
	}
	return nil
}

// lineWriter turns a command's output into one narration event per line.
type lineWriter struct {
	j      *job
	stream string
	level  string
	mu     sync.Mutex
	buf    []byte
}

func (j *job) lines(stream, level string) *lineWriter {
	return &lineWriter{j: j, stream: stream, level: level}
}

func (w *lineWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = lines.Cut(w.buf, b, w.emit)
	return len(b), nil
}

func (w *lineWriter) flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 {
		w.emit(w.buf, false) // the command's last output had no newline
		w.buf = nil
	}
}

func (w *lineWriter) emit(line []byte, ended bool) {
	_ = w.j.p.Emit(api.Event{Actor: "run", Action: "output", Stream: w.stream, Level: w.level, Partial: !ended,
		Message: string(bytes.ToValidUTF8(line, []byte("\uFFFD")))})
}
