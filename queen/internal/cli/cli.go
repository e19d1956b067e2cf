// Package cli is the rbee command line: job, hive, check and run commands
// on top of the queen's HTTP API. Run executes one invocation in-process,
// so tests drive the whole command line without building a binary.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"rbee.dev/queen/internal/client"
)

// DefaultQueen is the queen's address when neither --queen nor RBEE_QUEEN
// says otherwise: the loopback address a single-machine queen listens on.
const DefaultQueen = "http://127.0.0.1:7833"

// Exit codes beyond the job's own: 1 for failures, 2 for a command line
// that cannot be understood, 130 (128+SIGINT) for an interrupt, as shells do.
const (
	exitFailure     = 1
	exitUsage       = 2
	exitInterrupted = 130
)

// app is one invocation: its streams, its environment and its global flags.
type app struct {
	getenv func(string) string
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer

	queen   string
	token   string
	json    bool
	verbose bool

	client *client.Client
}

// Run executes the rbee command line with args (without the program name)
// and returns the process exit code. ctx ending stands for an interrupt
// (Ctrl-C): commands that own a job cancel it, others stop following.
// getenv supplies RBEE_QUEEN and RBEE_TOKEN, so tests need not touch the
// process environment.
func Run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) int {
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	if stdin == nil {
		stdin = strings.NewReader("")
	}
	a := &app{getenv: getenv, stdin: stdin, stdout: stdout, stderr: stderr}
	root := a.rootCommand()
	if args == nil {
		// cobra reads os.Args when given nil, which in a test is the test
		// binary's own flags.
		args = []string{}
	}
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	return a.exitCode(root.ExecuteContext(ctx))
}

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "rbee",
		Short: "rbee talks to a queen: submit and watch jobs, list hives, run commands",
		Long: `rbee talks to a queen of a private GPU cloud: it submits jobs, follows their
narration live, lists hives and runs commands on them.

The queen's address comes from --queen, else RBEE_QUEEN, else ` + DefaultQueen + `.
A token from --token or RBEE_TOKEN is sent as a bearer token.`,
		SilenceErrors: true,
		SilenceUsage:  true,
		Args:          groupArgs,
		RunE:          groupRun,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return a.setup(cmd)
		},
	}
	pf := root.PersistentFlags()
	pf.StringVar(&a.queen, "queen", "", "queen URL (env RBEE_QUEEN, default "+DefaultQueen+")")
	pf.StringVar(&a.token, "token", "", "bearer token (env RBEE_TOKEN)")
	pf.BoolVar(&a.json, "json", false, "machine output: records as JSON, streams as one JSON event per line")
	pf.BoolVarP(&a.verbose, "verbose", "v", false, "say more: narration of run jobs, reconnects")
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return &usageError{cmd: cmd.CommandPath(), err: err}
	})
	root.AddCommand(a.jobsCommand(), a.hiveCommand(), a.checkCommand(), a.runCommand(), a.keysCommand(), a.modelCommand(), a.workerCommand(), a.inferCommand(), a.usageCommand(), a.queueCommand())
	return root
}

// setup resolves the global flags against the environment and makes the
// client. Flags win over the environment so one call can aim elsewhere.
func (a *app) setup(cmd *cobra.Command) error {
	if !cmd.Flags().Changed("queen") {
		a.queen = a.getenv("RBEE_QUEEN")
	}
	if a.queen == "" {
		a.queen = DefaultQueen
	}
	if !cmd.Flags().Changed("token") {
		a.token = a.getenv("RBEE_TOKEN")
	}
	u, err := url.Parse(a.queen)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return &usageError{cmd: cmd.CommandPath(), err: fmt.Errorf("queen address %q is not an http(s) URL", a.queen)}
	}
	a.client = client.New(a.queen, a.token, nil)
	a.client.OnReconnect = func(attempt int, err error) {
		if a.verbose {
			fmt.Fprintf(a.stderr, "rbee: %v; reconnecting (attempt %d)\n", err, attempt)
		}
	}
	return nil
}

// usageError is a command line that cannot be understood; it exits 2.
type usageError struct {
	cmd string
	err error
}

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usagef(cmd *cobra.Command, format string, args ...any) error {
	return &usageError{cmd: cmd.CommandPath(), err: fmt.Errorf(format, args...)}
}

// exitError ends the command with a chosen code, and a message unless it
// is empty (a command's own failure has already spoken on stderr).
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

// exitCode prints err the one way every command reports failure and picks
// the exit code.
func (a *app) exitCode(err error) int {
	var ee *exitError
	var ue *usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		if ee.msg != "" {
			fmt.Fprintf(a.stderr, "rbee: %s\n", ee.msg)
		}
		return ee.code
	case errors.As(err, &ue):
		fmt.Fprintf(a.stderr, "rbee: %s\nRun '%s --help' for usage.\n", ue.err, ue.cmd)
		return exitUsage
	case errors.Is(err, context.Canceled):
		fmt.Fprintln(a.stderr, "rbee: interrupted")
		return exitInterrupted
	}
	fmt.Fprintf(a.stderr, "rbee: %s\n", err)
	return exitFailure
}

// groupArgs rejects an unknown subcommand of a command that only groups
// others; cobra would otherwise print help and exit 0.
func groupArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usagef(cmd, "unknown command %q for %q", args[0], cmd.CommandPath())
	}
	return nil
}

// groupRun shows the help of a grouping command called on its own.
func groupRun(cmd *cobra.Command, _ []string) error { return cmd.Help() }

// exactArgs is cobra.ExactArgs with a usage error and argument names.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		switch {
		case len(names) == 0 && len(args) > 0:
			return usagef(cmd, "%s takes no arguments; got %q", cmd.CommandPath(), args[0])
		case len(args) != len(names):
			return usagef(cmd, "%s needs %s; got %d arguments", cmd.CommandPath(), strings.Join(names, " "), len(args))
		}
		for i, n := range names {
			if args[i] == "" {
				return usagef(cmd, "%s must not be empty", n)
			}
		}
		return nil
	}
}

// durationFlag takes seconds ("90", "1.5") or a Go duration ("10m").
type durationFlag struct{ d time.Duration }

func (f *durationFlag) String() string {
	if f.d == 0 {
		return ""
	}
	return f.d.String()
}

func (f *durationFlag) Set(s string) error {
	if secs, err := strconv.ParseFloat(s, 64); err == nil {
		if secs < 0 {
			return errors.New("must not be negative")
		}
		f.d = time.Duration(secs * float64(time.Second))
		return nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return fmt.Errorf("%q is neither seconds nor a duration such as 10m", s)
	}
	f.d = d
	return nil
}

func (f *durationFlag) Type() string { return "seconds" }

// seconds is the flag's value in the API's timeout_s unit.
func (f *durationFlag) seconds() float64 { return f.d.Seconds() }

// labelsFlag adds the repeatable --label flag, placement labels a hive
// must carry, and returns where its values land.
func labelsFlag(cmd *cobra.Command) *[]string {
	var pairs []string
	cmd.Flags().StringArrayVar(&pairs, "label", nil, "run only on a hive with this label, KEY=VALUE (repeatable)")
	return &pairs
}

// parseKV splits k=v pairs of a repeated flag.
func parseKV(cmd *cobra.Command, flag string, pairs []string) (map[string]string, error) {
	if len(pairs) == 0 {
		return nil, nil
	}
	m := make(map[string]string, len(pairs))
	for _, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" {
			return nil, usagef(cmd, "--%s %q: want KEY=VALUE", flag, p)
		}
		m[k] = v
	}
	return m, nil
}

// isTerminal reports whether w is a terminal, where progress bars may
// redraw a line; pipes and files get plain lines instead.
func (a *app) isTerminal(w io.Writer) bool {
	if a.getenv("TERM") == "dumb" {
		return false
	}
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
