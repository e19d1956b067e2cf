//go:build !linux

package workers

import (
	"errors"
	"syscall"
)

// procInfo reports whether pid exists. Without /proc there is no start
// time to check, so a reused pid is not detected.
func procInfo(pid int) (start uint64, ok bool) {
	err := syscall.Kill(pid, 0)
	return 0, err == nil || errors.Is(err, syscall.EPERM)
}
