//go:build !linux

package agent

import "syscall"

// runProcAttr puts a run command in its own process group. Only Linux can
// tie a child's life to its parent's; elsewhere a command outlives a hive
// that was killed without a chance to stop it.
func runProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
