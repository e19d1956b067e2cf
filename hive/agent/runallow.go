package agent

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
)

// allowedExecutable checks a run request's program against Config.RunAllow
// and returns the path to execute. With no allowlist it returns name
// unchanged and exec resolves it as always.
//
// Both sides are resolved the same way, through PATH for bare names and
// then through every symlink, so "echo", "/bin/echo" and "/usr/bin/echo"
// are one program on a merged-/usr system, and a symlink to sh named like
// an allowed program is still sh. The resolved file is what runs, so
// neither the job's dir nor a symlink changed after the check can swap in
// another program. Relative paths such as ./x are refused: they would be
// resolved against the job's dir, which the request chooses.
func (a *Agent) allowedExecutable(name string) (string, error) {
	if len(a.cfg.RunAllow) == 0 {
		return name, nil
	}
	refuse := func(format string, args ...any) (string, error) {
		return "", fmt.Errorf("run refused: %s; nothing was executed", fmt.Sprintf(format, args...))
	}
	if strings.ContainsRune(name, '/') && !filepath.IsAbs(name) {
		return refuse("%q is a relative path; this hive's run allowlist takes absolute paths or bare names", clipArg(name))
	}
	want, err := resolveExecutable(name)
	if err != nil {
		return refuse("%v", err)
	}
	for _, entry := range a.cfg.RunAllow {
		if got, err := resolveExecutable(entry); err == nil && got == want {
			return want, nil
		}
	}
	return refuse("%q (%s) is not on this hive's run allowlist (%s)", clipArg(name), want, strings.Join(a.cfg.RunAllow, ", "))
}

// resolveExecutable turns an absolute path or a bare name into the absolute,
// symlink-free path of the file that would run.
func resolveExecutable(name string) (string, error) {
	if name == "" || strings.ContainsRune(name, '/') && !filepath.IsAbs(name) {
		return "", fmt.Errorf("%q is neither an absolute path nor a bare name", clipArg(name))
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%q is not an executable file on this hive", clipArg(name))
	}
	if p, err = filepath.Abs(p); err != nil {
		return "", err
	}
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return "", fmt.Errorf("%q cannot be resolved: %v", clipArg(name), err)
	}
	return real, nil
}

// clipArg shortens a request's argument before it is put in an error.
func clipArg(s string) string {
	if len(s) > 128 {
		s = s[:128] + "…"
	}
	return strings.ToValidUTF8(s, "?")
}
