package inventory

import (
	"bufio"
	"bytes"
	"strconv"
	"strings"

	"rbee.dev/shared/api"
)

// The /proc parsers live in a file without a build tag: the text formats
// are plain and the parsers pure, so they are tested on every platform
// even though only Linux reads the real files.

// parseMeminfo reads /proc/meminfo. Free memory is MemAvailable, the
// kernel's estimate of what can be allocated without swapping, because
// MemFree leaves out the page cache a model load can reclaim. Kernels
// before 3.14 lack MemAvailable; there the classic MemFree+Buffers+Cached
// estimate stands in. Missing or odd lines leave zeros: the hive must
// heartbeat regardless.
//
// Inside a container this is the host's memory, not a cgroup limit; hives
// are expected to run on the host they describe.
func parseMeminfo(data []byte) api.Memory {
	kb := map[string]uint64{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		key, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			continue
		}
		kb[key] = v
	}
	free, ok := kb["MemAvailable"]
	if !ok {
		free = kb["MemFree"] + kb["Buffers"] + kb["Cached"]
	}
	return api.Memory{TotalBytes: kb["MemTotal"] * 1024, FreeBytes: free * 1024}
}

// parseLoadavg returns the one-minute load average, the first field of
// /proc/loadavg, or 0 if it cannot be read.
func parseLoadavg(data []byte) float64 {
	f := strings.Fields(string(data))
	if len(f) == 0 {
		return 0
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return 0
	}
	return v
}
