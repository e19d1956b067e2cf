package inventory

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"time"
)

// SMI runs nvidia-smi with args and returns what it printed on stdout. It
// is an interface so tests can serve recorded outputs without a GPU.
type SMI interface {
	Query(ctx context.Context, args ...string) ([]byte, error)
}

// EnvNVIDIASMI names the environment variable FromEnvSMI reads: the path of
// the nvidia-smi binary to run instead of the one on PATH.
const EnvNVIDIASMI = "RBEE_NVIDIA_SMI"

// DefaultSMIPath is the binary ExecSMI runs when Path is empty, looked up
// on PATH.
const DefaultSMIPath = "nvidia-smi"

const (
	// smiTimeout bounds one nvidia-smi run. It is usually well under a
	// second, but a wedged driver can make it hang, and the heartbeat must
	// not hang with it.
	smiTimeout = 5 * time.Second
	// smiWaitDelay bounds the wait for output after nvidia-smi is killed:
	// a wrapper script's children can keep the pipes open long after the
	// script itself is gone.
	smiWaitDelay = time.Second
)

// ExecSMI runs the nvidia-smi binary at Path.
type ExecSMI struct {
	// Path is the binary to run: a file path, or a name looked up on PATH.
	// Empty means DefaultSMIPath.
	Path string
}

// FromEnvSMI returns an ExecSMI for the binary named by $RBEE_NVIDIA_SMI,
// or for nvidia-smi on PATH when that is unset. Pointing the variable at a
// script that prints recorded output lets tests and demos give a hive GPUs
// it does not have.
func FromEnvSMI() ExecSMI {
	if p := os.Getenv(EnvNVIDIASMI); p != "" {
		return ExecSMI{Path: p}
	}
	return ExecSMI{Path: DefaultSMIPath}
}

// Query runs nvidia-smi with args for at most 5 seconds and returns its
// stdout. A missing binary gives an error wrapping ErrNoSMI; a non-zero
// exit gives an *SMIError.
func (s ExecSMI) Query(ctx context.Context, args ...string) ([]byte, error) {
	path := s.Path
	if path == "" {
		path = DefaultSMIPath
	}
	runCtx, cancel := context.WithTimeout(ctx, smiTimeout)
	defer cancel()

	cmd := exec.CommandContext(runCtx, path, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	cmd.WaitDelay = smiWaitDelay
	err := cmd.Run()

	var exitErr *exec.ExitError
	switch {
	case err == nil:
		return stdout.Bytes(), nil
	case errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("run %s: %w", path, ErrNoSMI)
	case ctx.Err() != nil:
		return nil, fmt.Errorf("run %s: %w", path, ctx.Err())
	case runCtx.Err() != nil:
		return nil, fmt.Errorf("run %s: no answer within %s: %w", path, smiTimeout, runCtx.Err())
	case errors.As(err, &exitErr) && exitErr.ExitCode() > 0:
		return nil, &SMIError{
			Path:     path,
			ExitCode: exitErr.ExitCode(),
			Output:   stdout.String() + stderr.String(),
		}
	default:
		return nil, fmt.Errorf("run %s: %w", path, err)
	}
}
