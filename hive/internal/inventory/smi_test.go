package inventory_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"rbee.dev/hive/internal/inventory"
)

// fileSMI is an inventory.SMI that serves recorded nvidia-smi outputs from
// testdata/, so the GPU paths run on machines without GPUs.
type fileSMI struct {
	gpus string // file answering the GPU query
}

func (f fileSMI) Query(_ context.Context, args ...string) ([]byte, error) {
	if slices.Equal(args, inventory.GPUQueryArgs) {
		return os.ReadFile(filepath.Join("testdata", f.gpus))
	}
	return nil, errors.New("fileSMI: unexpected arguments " + strings.Join(args, " "))
}

// writeFakeSMI writes an executable shell script standing in for
// nvidia-smi: it prints the recorded file gpus for the GPU query, then
// exits with code. It returns the script's path.
func writeFakeSMI(tb testing.TB, gpus string, code int) string {
	tb.Helper()
	if runtime.GOOS == "windows" {
		tb.Skip("needs /bin/sh")
	}
	abs := func(name string) string {
		p, err := filepath.Abs(filepath.Join("testdata", name))
		if err != nil {
			tb.Fatal(err)
		}
		return p
	}
	script := "#!/bin/sh\n" +
		"case \"$1\" in\n" +
		"--query-gpu=*) cat '" + abs(gpus) + "' ;;\n" +
		"*) echo \"unexpected arguments: $*\" >&2; exit 2 ;;\n" +
		"esac\n" +
		"exit " + strconv.Itoa(code) + "\n"
	return writeScript(tb, script)
}

// writeScript writes an executable script into a fresh temporary
// directory. The file is closed before it is run, which avoids "text file
// busy"; tests running scripts are not parallel for the same reason.
func writeScript(tb testing.TB, body string) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "nvidia-smi")
	if err := os.WriteFile(path, []byte(body), 0o755); err != nil {
		tb.Fatal(err)
	}
	return path
}

func TestExecSMIMissingBinary(t *testing.T) {
	tests := []struct {
		name string
		path string
	}{
		{"absolute path", filepath.Join(t.TempDir(), "no", "nvidia-smi")},
		{"name not on PATH", "rbee-test-no-such-nvidia-smi"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			smi := inventory.ExecSMI{Path: tt.path}
			_, err := smi.Query(t.Context(), inventory.GPUQueryArgs...)
			if !errors.Is(err, inventory.ErrNoSMI) {
				t.Fatalf("Query error = %v, want ErrNoSMI", err)
			}
			gpus, err := inventory.ProbeGPUs(t.Context(), smi)
			if !errors.Is(err, inventory.ErrNoSMI) || gpus != nil {
				t.Errorf("ProbeGPUs = %v, %v; want nil, ErrNoSMI", gpus, err)
			}
			inv := inventory.Collect(t.Context(), t.TempDir(), smi)
			if inv.GPUs == nil || len(inv.GPUs) != 0 {
				t.Errorf("Collect GPUs = %#v, want empty", inv.GPUs)
			}
		})
	}
}

func TestExecSMIScript(t *testing.T) {
	smi := inventory.ExecSMI{Path: writeFakeSMI(t, "gpus-8x-a100.csv", 0)}
	gpus, err := inventory.ProbeGPUs(t.Context(), smi)
	if err != nil {
		t.Fatalf("ProbeGPUs: %v", err)
	}
	if len(gpus) != 8 {
		t.Errorf("got %d GPUs, want 8", len(gpus))
	}
	if inv := inventory.Collect(t.Context(), t.TempDir(), smi); len(inv.GPUs) != 8 {
		t.Errorf("Collect found %d GPUs, want 8", len(inv.GPUs))
	}
}

func TestExecSMIDriverError(t *testing.T) {
	tests := []struct {
		name     string
		file     string
		code     int
		wantText []string
	}{
		{
			name:     "driver not loaded",
			file:     "smi-driver-error.txt",
			code:     9,
			wantText: []string{"exited with status 9", "NVIDIA driver is not loaded", "couldn't communicate with the NVIDIA driver"},
		},
		{
			name:     "no devices",
			file:     "smi-no-devices.txt",
			code:     6,
			wantText: []string{"exited with status 6", "No devices were found"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			smi := inventory.ExecSMI{Path: writeFakeSMI(t, tt.file, tt.code)}
			gpus, err := inventory.ProbeGPUs(t.Context(), smi)
			if err == nil {
				t.Fatalf("ProbeGPUs = %v, want an error", gpus)
			}
			if errors.Is(err, inventory.ErrNoSMI) {
				t.Errorf("error %v is ErrNoSMI; a broken driver must not pass for a GPU-less machine", err)
			}
			var smiErr *inventory.SMIError
			if !errors.As(err, &smiErr) || smiErr.ExitCode != tt.code {
				t.Fatalf("error %v (%T), want *SMIError with exit code %d", err, err, tt.code)
			}
			for _, s := range tt.wantText {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q spans lines", err)
			}
			if inv := inventory.Collect(t.Context(), t.TempDir(), smi); len(inv.GPUs) != 0 {
				t.Errorf("Collect found %d GPUs, want none", len(inv.GPUs))
			}
		})
	}
}

func TestExecSMIContextDeadline(t *testing.T) {
	// exec replaces the shell so killing it closes the pipes at once.
	smi := inventory.ExecSMI{Path: writeScript(t, "#!/bin/sh\nexec sleep 10\n")}
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := smi.Query(ctx, inventory.GPUQueryArgs...)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Query error = %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Query took %s after its context ended", d)
	}
}

func TestFromEnvSMI(t *testing.T) {
	t.Run("unset", func(t *testing.T) {
		t.Setenv(inventory.EnvNVIDIASMI, "")
		if got := inventory.FromEnvSMI().Path; got != inventory.DefaultSMIPath {
			t.Errorf("Path = %q, want %q", got, inventory.DefaultSMIPath)
		}
	})
	t.Run("set", func(t *testing.T) {
		script := writeFakeSMI(t, "gpus-rtx4090.csv", 0)
		t.Setenv(inventory.EnvNVIDIASMI, script)
		smi := inventory.FromEnvSMI()
		if smi.Path != script {
			t.Errorf("Path = %q, want %q", smi.Path, script)
		}
		inv := inventory.Collect(t.Context(), t.TempDir(), smi)
		if len(inv.GPUs) != 1 || inv.GPUs[0].Name != "NVIDIA GeForce RTX 4090" {
			t.Errorf("Collect GPUs = %+v, want the RTX 4090", inv.GPUs)
		}
	})
}
