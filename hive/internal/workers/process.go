package workers

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// instance is one run of a worker's process: a child of this hive, or a
// process adopted from a previous hive run.
type instance struct {
	pid int
	// exited is closed when the process is gone; err then says how.
	exited chan struct{}
	err    error
}

func (in *instance) gone() bool {
	select {
	case <-in.exited:
		return true
	default:
		return false
	}
}

// passEnv is the part of the hive's environment a worker inherits. The rest
// (NATS credentials, tokens) stays with the hive.
var passEnv = []string{"PATH", "HOME", "USER", "LANG", "LC_ALL", "TZ", "TMPDIR", "LD_LIBRARY_PATH", "HF_HOME", "HF_HUB_OFFLINE"}

// workerEnv is a worker's environment. CUDA_DEVICE_ORDER=PCI_BUS_ID makes
// CUDA number GPUs as nvidia-smi (and so the hive's inventory) does, so that
// the indices of a spawn request mean the same GPUs to both. Without GPUs
// asked for, the hive's own CUDA_VISIBLE_DEVICES (if any) passes through.
func workerEnv(gpus []int) []string {
	var env []string
	for _, k := range passEnv {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	env = append(env, "CUDA_DEVICE_ORDER=PCI_BUS_ID")
	if len(gpus) > 0 {
		ids := make([]string, len(gpus))
		for i, g := range gpus {
			ids[i] = strconv.Itoa(g)
		}
		env = append(env, "CUDA_VISIBLE_DEVICES="+strings.Join(ids, ","))
	} else if v, ok := os.LookupEnv("CUDA_VISIBLE_DEVICES"); ok {
		env = append(env, "CUDA_VISIBLE_DEVICES="+v)
	}
	return env
}

// startProcess starts argv in its own process group with its output
// appended to logPath, and reaps it in a goroutine counted by the
// supervisor's procs group.
func (s *Supervisor) startProcess(argv, env []string, logPath string) (*instance, error) {
	f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("worker log: %w", err)
	}
	defer f.Close()
	fmt.Fprintf(f, "[rbee] %s starting: %s\n", time.Now().UTC().Format(time.RFC3339), strings.Join(argv, " "))
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Dir = s.dir
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(f, "[rbee] cannot start: %v\n", err)
		return nil, fmt.Errorf("start %s: %w", argv[0], err)
	}
	in := &instance{pid: cmd.Process.Pid, exited: make(chan struct{})}
	s.procs.Add(1)
	go func() {
		defer s.procs.Done()
		err := cmd.Wait()
		if err == nil {
			err = errors.New("exit status 0")
		}
		in.err = err
		close(in.exited)
	}()
	return in, nil
}

// watchPID follows a process that is not this hive's child (an adopted
// worker): it cannot be waited for, so it is polled. The poll ends when the
// process is gone or the supervisor ends.
func (s *Supervisor) watchPID(pid int, start uint64) *instance {
	in := &instance{pid: pid, exited: make(chan struct{})}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			if !processAlive(pid, start) {
				in.err = errors.New("exited (an adopted process: its exit status is not known)")
				close(in.exited)
				return
			}
			select {
			case <-s.ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return in
}

// processAlive reports whether pid runs and, when start is known, is the
// same process that was recorded.
func processAlive(pid int, start uint64) bool {
	if pid <= 0 {
		return false
	}
	now, ok := procInfo(pid)
	return ok && (start == 0 || now == 0 || now == start)
}

// signalGroup sends sig to the process group pgid. It refuses group ids
// that would hit init or this hive's own group: kill(-0) means "my group".
func signalGroup(pgid int, sig syscall.Signal) error {
	if pgid <= 1 || pgid == syscall.Getpgrp() {
		return fmt.Errorf("refusing to signal process group %d", pgid)
	}
	return syscall.Kill(-pgid, sig)
}

// groupAlive reports whether any process is left in group pgid.
func groupAlive(pgid int) bool {
	if pgid <= 1 {
		return false
	}
	err := syscall.Kill(-pgid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// terminate stops an instance: SIGTERM to its group, SIGKILL after grace,
// then SIGKILL to whatever the worker left behind in its group (vLLM, for
// one, runs helper processes that hold GPU memory).
func (s *Supervisor) terminate(in *instance, pgid int) {
	if in == nil {
		return
	}
	if !in.gone() {
		_ = signalGroup(pgid, syscall.SIGTERM)
		// A stopped (SIGSTOP) process handles SIGTERM only once continued.
		_ = signalGroup(pgid, syscall.SIGCONT)
		t := time.NewTimer(s.cfg.StopGrace)
		select {
		case <-in.exited:
			t.Stop()
		case <-t.C:
			_ = signalGroup(pgid, syscall.SIGKILL)
			select {
			case <-in.exited:
			case <-time.After(s.cfg.StopGrace):
				s.log.Warn("worker process survives SIGKILL", "pid", in.pid)
			}
		}
	}
	if groupAlive(pgid) {
		_ = signalGroup(pgid, syscall.SIGKILL)
	}
}

// freePort asks the kernel for a free TCP port on host. Another process
// may take it before the worker binds it; the worker then fails to start
// and the error says so.
func freePort(host string) (int, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("pick a port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// describeExit says how a process ended, for a person.
func describeExit(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return "killed by signal " + ws.Signal().String()
		}
		return fmt.Sprintf("exit status %d", ee.ExitCode())
	}
	if err == nil {
		return "exited"
	}
	return err.Error()
}
