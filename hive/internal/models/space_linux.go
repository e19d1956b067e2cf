//go:build linux

package models

import "syscall"

// freeSpace is the space an unprivileged process may still use on the file
// system holding dir (f_bavail), or -1 when it cannot be measured.
func freeSpace(dir string) int64 {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return -1
	}
	unit := uint64(st.Frsize)
	if unit == 0 {
		unit = uint64(st.Bsize)
	}
	return int64(min(st.Bavail*unit, 1<<62))
}
