package inventory

import (
	"errors"
	"fmt"
	"strings"
)

// ErrNoSMI means the nvidia-smi binary is not there. On a hive that is the
// ordinary sign of a machine without NVIDIA GPUs, so callers should treat
// it as "no GPUs" and not report it as a fault.
var ErrNoSMI = errors.New("nvidia-smi not installed")

// SMIError is nvidia-smi running and exiting non-zero: the binary is
// installed but the driver or a GPU is in trouble, which an operator needs
// to hear about, unlike ErrNoSMI.
type SMIError struct {
	// Path is the binary that was run.
	Path string
	// ExitCode is nvidia-smi's exit status; its meanings are documented in
	// nvidia-smi(1), e.g. 9 for "NVIDIA driver is not loaded".
	ExitCode int
	// Output is what nvidia-smi printed, stdout then stderr. It prints its
	// own failures on stdout, so both are kept.
	Output string
}

// smiExitMeanings are the exit codes listed in nvidia-smi(1). They turn a
// bare "exit status 15" into something an operator can act on.
var smiExitMeanings = map[int]string{
	2:   "invalid argument or flag",
	3:   "operation not available on the device",
	4:   "no permission to access the device",
	6:   "query to find an object was unsuccessful",
	8:   "external power cables not properly attached",
	9:   "NVIDIA driver is not loaded",
	10:  "NVIDIA kernel detected an interrupt issue with a GPU",
	12:  "NVML shared library could not be found or loaded",
	13:  "local NVML does not implement this function",
	14:  "infoROM is corrupted",
	15:  "GPU has fallen off the bus or is otherwise inaccessible",
	255: "other or internal driver error",
}

// maxOutputInError bounds how much of nvidia-smi's output goes into an
// error message, which ends up in logs and narration events.
const maxOutputInError = 300

// Error says which binary failed, what its exit code means and the gist of
// what it printed.
func (e *SMIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s exited with status %d", e.Path, e.ExitCode)
	if m, ok := smiExitMeanings[e.ExitCode]; ok {
		fmt.Fprintf(&b, " (%s)", m)
	}
	if out := oneLine(e.Output, maxOutputInError); out != "" {
		b.WriteString(": ")
		b.WriteString(out)
	}
	return b.String()
}

// oneLine folds s onto one line, so a multi-line message reads well in a
// log line, and cuts it at max runes.
func oneLine(s string, max int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > max {
		return string(r[:max]) + "…"
	}
	return s
}
