package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"rbee.dev/shared/api"
)

func (a *app) runCommand() *cobra.Command {
	var (
		hive, dir string
		env       []string
		timeout   durationFlag
	)
	var labels *[]string
	cmd := &cobra.Command{
		Use:   "run [--hive H] [--env K=V ...] [--dir D] [--timeout S] -- CMD ARGS...",
		Short: "Run a command on a hive, with its output here and its exit code",
		Long: `Run a command on a hive as a run job. Its stdout and stderr lines arrive
on ours as it writes them, and rbee exits with the command's exit code
(1 when the job failed without one, 130 when it was cancelled). Flags end
at the first argument that is not one, so "--" is only needed before a
command that starts with "-". Ctrl-C cancels the job and waits up to 5s for
the hive to confirm. With -v, the job's narration goes to stderr too.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef(cmd, "run needs a command: rbee run [flags] -- CMD ARGS...")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			envMap, err := parseKV(cmd, "env", env)
			if err != nil {
				return err
			}
			labelMap, err := parseKV(cmd, "label", *labels)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			req := api.JobRequest{
				Operation: api.OpRun, Hive: hive, Labels: labelMap, TimeoutS: timeout.seconds(),
				Payload: &api.Run{Command: args, Env: envMap, Dir: dir},
			}
			created, err := a.createOwn(ctx, req)
			if err != nil {
				return err
			}
			r := &renderer{a: a, jsonLines: a.json, output: true}
			if a.verbose {
				fmt.Fprintf(a.stderr, "job %s\n", created.JobID)
				r.narr = a.stderr
			}
			if err := a.follow(ctx, created.JobID, true, r); err != nil {
				return err
			}
			return a.runExit(ctx, created.JobID, r.end)
		},
	}
	f := cmd.Flags()
	// The command's own flags must reach it untouched: `rbee run ls -l`.
	f.SetInterspersed(false)
	f.StringVar(&hive, "hive", "", "hive to run on (default: the queen places the job)")
	labels = labelsFlag(cmd)
	f.StringArrayVar(&env, "env", nil, "environment variable KEY=VALUE (repeatable)")
	f.StringVar(&dir, "dir", "", "working directory on the hive")
	f.Var(&timeout, "timeout", "job deadline, in seconds or as a duration such as 10m")
	return cmd
}

// runExit maps a run job's end to rbee's exit code, the way a shell would
// for a local command.
func (a *app) runExit(ctx context.Context, jobID string, end *api.Event) error {
	if end == nil {
		return fmt.Errorf("stream of job %s ended without an end event", jobID)
	}
	switch end.State {
	case api.StateDone:
		if end.ExitCode != nil && *end.ExitCode != 0 {
			return &exitError{code: clampExit(*end.ExitCode)}
		}
		return nil
	case api.StateCancelled:
		msg := "job " + jobID + " was cancelled"
		if ctx.Err() != nil {
			msg = "interrupted; job " + jobID + " cancelled"
		}
		return &exitError{code: exitInterrupted, msg: msg}
	}
	code := exitFailure
	if end.ExitCode != nil && *end.ExitCode > 0 {
		code = clampExit(*end.ExitCode)
	}
	// A command that exited non-zero has said why on stderr already; the
	// job's error matters when there was no exit code (not allowed, not
	// found, timed out, hive lost) or a signal killed it.
	var msg string
	if end.Error != "" && (end.ExitCode == nil || *end.ExitCode <= 0 || a.verbose) {
		msg = "job " + jobID + " " + end.State + ": " + end.Error
	} else if end.ExitCode == nil {
		msg = "job " + jobID + " " + end.State
	}
	return &exitError{code: code, msg: msg}
}

// clampExit keeps an exit code in the 1..255 a process can return.
func clampExit(code int) int {
	if code < 1 || code > 255 {
		return exitFailure
	}
	return code
}
