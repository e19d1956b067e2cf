package workers

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
)

// procInfo reads a process's start time (clock ticks since boot) from
// /proc. ok is false when the process does not exist or is a zombie. The
// start time tells a worker that the hive recorded from an unrelated
// process that was given the same pid later.
func procInfo(pid int) (start uint64, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	// The command name, in parentheses, may itself hold spaces and ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 > len(b) {
		return 0, false
	}
	f := bytes.Fields(b[i+2:])
	// f[0] is field 3 (state); field 22 (starttime) is f[19].
	if len(f) < 20 || f[0][0] == 'Z' || f[0][0] == 'X' {
		return 0, false
	}
	start, err = strconv.ParseUint(string(f[19]), 10, 64)
	if err != nil {
		return 0, false
	}
	return start, true
}
