// Package inventory tells what a hive machine has to offer: CPU, RAM, the
// disk holding its data directory and its NVIDIA GPUs. GPUs are found
// through the nvidia-smi binary rather than NVML, because binding NVML
// needs cgo and release binaries are static; nvidia-smi ships with every
// driver and its CSV output is stable.
//
// Nothing here fails the heartbeat: an unreadable /proc or a broken driver
// leaves zero values.
package inventory

import (
	"context"
	"fmt"
	"os"
	"runtime"

	"rbee.dev/shared/api"
)

// Collect describes this machine: Host plus the GPUs nvidia-smi reports
// through smi. It never fails; a hive must heartbeat even when /proc is
// unreadable or the NVIDIA driver is broken, so those leave zero values
// and no GPUs. A nil smi means the hive is not to look for GPUs.
func Collect(ctx context.Context, dataDir string, smi SMI) api.Inventory {
	inv := Host(dataDir)
	if gpus, err := probeGPUs(ctx, smi); err == nil && gpus != nil {
		inv.GPUs = gpus
	}
	return inv
}

// Host describes this machine without its GPUs: hostname, OS and
// architecture, CPU cores and one-minute load, RAM, and the file system
// holding dataDir. GPUs is empty, not nil, so it encodes as [] on the wire.
func Host(dataDir string) api.Inventory {
	host, _ := os.Hostname()
	total, free := diskSpace(dataDir)
	return api.Inventory{
		Hostname: host,
		OS:       runtime.GOOS,
		Arch:     runtime.GOARCH,
		CPU:      api.CPU{Cores: runtime.NumCPU(), Load1: load1()},
		RAM:      memory(),
		Disk:     api.Disk{Path: dataDir, TotalBytes: total, FreeBytes: free},
		GPUs:     []api.GPU{},
	}
}

// probeGPUs runs nvidia-smi's GPU query. An error wrapping ErrNoSMI means
// nvidia-smi is not installed (or smi is nil): no NVIDIA GPUs, nothing to
// worry about. An *SMIError (errors.As) means nvidia-smi ran and failed,
// e.g. exit 9 when the driver is not loaded.
func probeGPUs(ctx context.Context, smi SMI) ([]api.GPU, error) {
	if smi == nil {
		return nil, fmt.Errorf("query gpus: no nvidia-smi configured: %w", ErrNoSMI)
	}
	out, err := smi.Query(ctx, gpuQueryArgs...)
	if err != nil {
		return nil, fmt.Errorf("query gpus: %w", err)
	}
	gpus, err := ParseGPUs(out)
	if err != nil {
		return nil, fmt.Errorf("query gpus: %w", err)
	}
	return gpus, nil
}
