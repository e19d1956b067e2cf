package agent

import "syscall"

// runProcAttr puts a run command in its own process group and has the
// kernel kill it when the hive dies, even by SIGKILL, when no deferred
// cleanup runs. The kernel sends Pdeathsig when the thread that started
// the child ends, not the process, so runCommand holds its OS thread from
// the start until the command is reaped.
func runProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
