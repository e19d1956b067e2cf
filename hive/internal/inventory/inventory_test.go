package inventory_test

import (
	"encoding/json"
	"errors"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"rbee.dev/hive/internal/inventory"
)

func TestCollectHost(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("CPU load, RAM and disk are read on Linux only")
	}
	dir := t.TempDir()
	tests := []struct {
		name    string
		dataDir string
	}{
		{"existing data dir", dir},
		// A hive measures its data dir before creating it on first start.
		{"data dir not created yet", filepath.Join(dir, "not", "yet")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inv := inventory.Collect(t.Context(), tt.dataDir, nil)
			if inv.Hostname == "" {
				t.Error("no hostname")
			}
			if inv.OS != runtime.GOOS || inv.Arch != runtime.GOARCH {
				t.Errorf("OS/Arch = %s/%s, want %s/%s", inv.OS, inv.Arch, runtime.GOOS, runtime.GOARCH)
			}
			if inv.CPU.Cores <= 0 || inv.CPU.Load1 < 0 {
				t.Errorf("CPU = %+v", inv.CPU)
			}
			if inv.RAM.TotalBytes == 0 || inv.RAM.FreeBytes > inv.RAM.TotalBytes {
				t.Errorf("RAM = %+v", inv.RAM)
			}
			if inv.Disk.Path != tt.dataDir || inv.Disk.TotalBytes == 0 || inv.Disk.FreeBytes > inv.Disk.TotalBytes {
				t.Errorf("Disk = %+v", inv.Disk)
			}
			if inv.GPUs == nil || len(inv.GPUs) != 0 {
				t.Errorf("GPUs = %#v, want empty with a nil SMI", inv.GPUs)
			}
		})
	}
}

func TestCollectGPUs(t *testing.T) {
	tests := []struct {
		name     string
		smi      inventory.SMI
		wantGPUs int
	}{
		{"one GPU", fileSMI{gpus: "gpus-rtx4090.csv"}, 1},
		{"eight GPUs", fileSMI{gpus: "gpus-8x-a100.csv"}, 8},
		{"MIG", fileSMI{gpus: "gpus-a100-mig.csv"}, 1},
		{"unsupported fields", fileSMI{gpus: "gpus-gtx1650-not-supported.csv"}, 1},
		{"driver error printed with exit 0", fileSMI{gpus: "smi-driver-error.txt"}, 0},
		{"query fails", fileSMI{gpus: "no-such-file"}, 0},
		{"no SMI", nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inv := inventory.Collect(t.Context(), t.TempDir(), tt.smi)
			if len(inv.GPUs) != tt.wantGPUs {
				t.Errorf("got %d GPUs, want %d", len(inv.GPUs), tt.wantGPUs)
			}
			// The wire field has no omitempty: a GPU-less hive says [] rather
			// than null, so clients can range over it without a check.
			data, err := json.Marshal(inv)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(string(data), `"gpus":null`) {
				t.Errorf("inventory encodes gpus as null: %s", data)
			}
		})
	}
}

func TestProbeGPUs(t *testing.T) {
	tests := []struct {
		name     string
		smi      inventory.SMI
		wantGPUs int
		wantErr  error // matched with errors.Is; nil means no error
	}{
		{"eight GPUs", fileSMI{gpus: "gpus-8x-a100.csv"}, 8, nil},
		{"MIG", fileSMI{gpus: "gpus-a100-mig.csv"}, 1, nil},
		{"one GPU", fileSMI{gpus: "gpus-rtx4090.csv"}, 1, nil},
		{"no SMI", nil, 0, inventory.ErrNoSMI},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gpus, err := inventory.ProbeGPUs(t.Context(), tt.smi)
			if tt.wantErr == nil && err != nil {
				t.Fatalf("ProbeGPUs: %v", err)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("ProbeGPUs error = %v, want %v", err, tt.wantErr)
			}
			if len(gpus) != tt.wantGPUs {
				t.Errorf("got %d GPUs, want %d", len(gpus), tt.wantGPUs)
			}
		})
	}
}
