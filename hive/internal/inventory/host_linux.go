//go:build linux

package inventory

import (
	"os"
	"path/filepath"
	"syscall"

	"rbee.dev/shared/api"
)

// load1 is the one-minute load average, 0 if /proc cannot be read.
func load1() float64 {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	return parseLoadavg(data)
}

// memory is total and available RAM, zeros if /proc cannot be read.
func memory() api.Memory {
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return api.Memory{}
	}
	return parseMeminfo(data)
}

// diskSpace returns the size of the file system holding path and the space
// an unprivileged process may still use on it (f_bavail, what df calls
// Avail: the root-reserved blocks are no use to a hive). A path that does
// not exist yet, like a data directory the hive has still to create, is
// measured at its nearest existing parent, the file system it will land
// on.
func diskSpace(path string) (total, free uint64) {
	if path == "" {
		path = "."
	}
	for {
		var st syscall.Statfs_t
		err := syscall.Statfs(path, &st)
		if err == nil {
			// f_blocks and f_bavail count fragments of f_frsize; f_bsize is
			// only the preferred I/O size, though the two are usually equal.
			unit := uint64(st.Frsize)
			if unit == 0 {
				unit = uint64(st.Bsize)
			}
			return st.Blocks * unit, st.Bavail * unit
		}
		parent := filepath.Dir(path)
		if parent == path {
			return 0, 0
		}
		path = parent
	}
}
