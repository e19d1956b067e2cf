package agent

import (
	"io"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// outputIdle is how long, once a command has exited, its output may stay
// open with nothing to read before the hive stops reading it: a process
// that left the command's group and keeps the pipes open must not hold the
// job. Time the hive spends narrating what it read does not count: output
// the command wrote before it exited is read to the end however slowly
// NATS takes it.
const outputIdle = 2 * time.Second

// execute starts cmd, which runs in its own process group, with its output
// written to stdout and stderr, calls started with its pid, and waits for
// it to exit and for its output to be read. A command that could not be
// started gives a *startError. exited is closed as soon as
// the command has exited; whatever it left behind in its group is killed
// then.
//
// The hive reads the pipes itself rather than leaving them to os/exec,
// whose WaitDelay closes them a fixed time after the command exits, with
// whatever was still in them: a command that wrote its output faster than
// NATS stored it (a stream electing a leader takes seconds) lost its tail
// while its job ended done.
func execute(cmd *exec.Cmd, stdout, stderr io.Writer, started func(pid int), exited chan struct{}) error {
	var (
		reads  [2]*os.File
		writes [2]*os.File
	)
	for i := range reads {
		r, w, err := os.Pipe()
		if err != nil {
			closeAll(reads[:], writes[:])
			close(exited)
			return err
		}
		reads[i], writes[i] = r, w
	}
	cmd.Stdout, cmd.Stderr = writes[0], writes[1]
	err := cmd.Start()
	// The command holds its own copies of the write ends.
	closeAll(writes[:])
	if err != nil {
		closeAll(reads[:])
		close(exited)
		return &startError{err}
	}
	pgid := cmd.Process.Pid
	// Before any output, so that what started says comes first.
	started(pgid)
	var (
		done   atomic.Bool
		copies sync.WaitGroup
	)
	for i, w := range []io.Writer{stdout, stderr} {
		copies.Add(1)
		go func() {
			defer copies.Done()
			defer reads[i].Close()
			copyOutput(reads[i], w, &done)
		}()
	}
	err = cmd.Wait()
	close(exited)
	// Whatever the command left behind in its group goes with it, and
	// with it the last write ends of the pipes but for escapees.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	done.Store(true)
	for _, r := range reads {
		// Wakes a read waiting on an empty pipe; copyOutput sets a
		// fresh deadline before each later read.
		_ = r.SetReadDeadline(time.Now().Add(outputIdle))
	}
	copies.Wait()
	return err
}

// copyOutput writes what r yields to w until r ends, or, once exited is
// set, until r has nothing to read for outputIdle.
func copyOutput(r *os.File, w io.Writer, exited *atomic.Bool) {
	buf := make([]byte, 32<<10)
	for {
		if exited.Load() {
			_ = r.SetReadDeadline(time.Now().Add(outputIdle))
		}
		n, err := r.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func closeAll(sets ...[]*os.File) {
	for _, set := range sets {
		for _, f := range set {
			if f != nil {
				_ = f.Close()
			}
		}
	}
}

// startError is a command that could not be started.
type startError struct{ err error }

func (e *startError) Error() string { return e.err.Error() }
func (e *startError) Unwrap() error { return e.err }
