package bench

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"time"
)

// clockTicks is USER_HZ, the unit of the CPU times in /proc/<pid>/stat. It
// is 100 on every Linux architecture Go supports; reading it properly needs
// sysconf(_SC_CLK_TCK), which is libc.
const clockTicks = 100

// CPUTime is the CPU a process has used so far, user plus system, summed
// over all its threads.
func CPUTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseStatCPU(b)
}

// parseStatCPU reads utime and stime, fields 14 and 15 of /proc/<pid>/stat.
// The command name (field 2) may hold spaces and parentheses, so fields are
// counted from the last ')'.
func parseStatCPU(b []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed stat line")
	}
	f := bytes.Fields(b[i+1:]) // f[0] is field 3, the state
	if len(f) < 13 {
		return 0, fmt.Errorf("malformed stat line: %d fields", len(f))
	}
	ut, err1 := strconv.ParseUint(string(f[11]), 10, 64)
	st, err2 := strconv.ParseUint(string(f[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("malformed stat times %q %q", f[11], f[12])
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// Mem is a process's resident memory, in bytes.
type Mem struct {
	RSS  uint64 // VmRSS: resident now
	Peak uint64 // VmHWM: the most ever resident, or since the last ResetPeak
	// Data is VmData, the private address space mapped: for a Go program,
	// the heap arenas it has reserved whether or not the pages were touched.
	Data uint64
}

// ReadMem reads VmRSS, VmHWM and VmData from /proc/<pid>/status.
func ReadMem(pid int) (Mem, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Mem{}, err
	}
	var m Mem
	for _, line := range bytes.Split(b, []byte("\n")) {
		switch {
		case bytes.HasPrefix(line, []byte("VmRSS:")):
			m.RSS = kbField(line)
		case bytes.HasPrefix(line, []byte("VmHWM:")):
			m.Peak = kbField(line)
		case bytes.HasPrefix(line, []byte("VmData:")):
			m.Data = kbField(line)
		}
	}
	return m, nil
}

// kbField reads a "Name:   1234 kB" line as bytes.
func kbField(line []byte) uint64 {
	f := bytes.Fields(line)
	if len(f) < 2 {
		return 0
	}
	n, _ := strconv.ParseUint(string(f[1]), 10, 64)
	return n << 10
}

// ResetPeak makes VmHWM start again from the current RSS (Linux 4.0+), so
// a scenario's peak is not its start-up's.
func ResetPeak(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

// Usage is what a process has used over a span of time.
type Usage struct {
	CPU time.Duration
	Mem Mem
}

// MachineCPU is the CPU time all processes of the machine have used since
// boot: user, nice, system, irq, softirq and steal from /proc/stat.
func MachineCPU() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := bytes.Fields(line)
	if len(f) < 9 || string(f[0]) != "cpu" {
		return 0, fmt.Errorf("malformed /proc/stat")
	}
	var busy uint64
	for _, i := range []int{1, 2, 3, 6, 7, 8} { // user nice system irq softirq steal
		n, err := strconv.ParseUint(string(f[i]), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("malformed /proc/stat: %w", err)
		}
		busy += n
	}
	return time.Duration(busy) * time.Second / clockTicks, nil
}

// Others is the name under which a Meter reports the CPU that processes
// other than the measured ones used: other people's builds and tests on a
// shared machine, which slow a benchmark down.
const Others = "others"

// Meter follows the CPU of a set of processes across a span, and of the
// whole machine.
type Meter struct {
	pids    map[string]int
	start   map[string]time.Duration
	machine time.Duration
	t0      time.Time
}

// NewMeter starts measuring the named processes now. A pid of 0 means the
// bench process itself.
func NewMeter(pids map[string]int) *Meter {
	m := &Meter{pids: pids, start: map[string]time.Duration{}, t0: time.Now()}
	for name, pid := range pids {
		m.start[name], _ = CPUTime(resolvePid(pid))
	}
	m.machine, _ = MachineCPU()
	return m
}

// Stop returns each process's CPU since NewMeter and its memory now, the
// CPU of every other process under Others, and the wall time elapsed.
func (m *Meter) Stop() (map[string]Usage, time.Duration) {
	wall := time.Since(m.t0)
	out := map[string]Usage{}
	var ours time.Duration
	for name, pid := range m.pids {
		cpu, _ := CPUTime(resolvePid(pid))
		mem, _ := ReadMem(resolvePid(pid))
		out[name] = Usage{CPU: cpu - m.start[name], Mem: mem}
		ours += cpu - m.start[name]
	}
	if all, err := MachineCPU(); err == nil && m.machine > 0 {
		out[Others] = Usage{CPU: max(0, all-m.machine-ours)}
	}
	return out, wall
}

// Alive reports whether pid is a running process: not gone, not a zombie
// waiting to be reaped.
func Alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && b[i+2] != 'Z' && b[i+2] != 'X'
}

func resolvePid(pid int) int {
	if pid == 0 {
		return os.Getpid()
	}
	return pid
}
