package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"rbee.dev/queen/internal/client"
	"rbee.dev/shared/api"
)

// maxBodyBytes bounds a --body read from stdin; the queen refuses far
// smaller bodies anyway.
const maxBodyBytes = 8 << 20

func (a *app) jobsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "jobs",
		Short: "Submit, list, inspect, follow and cancel jobs",
		Args:  groupArgs,
		RunE:  groupRun,
	}
	cmd.AddCommand(a.jobsSubmitCommand(), a.jobsListCommand(), a.jobsGetCommand(), a.jobsLogsCommand(), a.jobsCancelCommand())
	return cmd
}

func (a *app) jobsSubmitCommand() *cobra.Command {
	var (
		op, hive, body, key string
		fields              []string
		timeout             durationFlag
		follow              bool
	)
	var labels *[]string
	cmd := &cobra.Command{
		Use:   "submit --op NAME [--hive H] [--field k=v ...] [--body JSON|-] [-f]",
		Short: "Submit a job and print its id, or follow it with -f",
		Long: `Submit a job and print its id, or follow its narration with -f.

The request is --body (a JSON object, or - to read one from stdin) with
--op, --hive, --timeout and every --field laid over it. A --field value is
taken as text for text fields (model=llama) and as JSON otherwise
(events=100, command='["sh","-c","echo hi"]').

With -f the exit code is the job's outcome: 0 done, 1 failed or cancelled.
An interrupt stops following; the job goes on.

` + operationsHelp(),
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			req, err := a.buildRequest(cmd, body, op, hive, &timeout, fields)
			if err != nil {
				return err
			}
			labelMap, err := parseKV(cmd, "label", *labels)
			if err != nil {
				return err
			}
			for k, v := range labelMap {
				if req.Labels == nil {
					req.Labels = map[string]string{}
				}
				req.Labels[k] = v
			}
			created, err := a.client.CreateJob(cmd.Context(), req, key)
			if err != nil {
				return fmt.Errorf("submit %s job: %w", req.Operation, err)
			}
			if !follow {
				if a.json {
					return writeJSON(a.stdout, created)
				}
				_, err := fmt.Fprintln(a.stdout, created.JobID)
				return err
			}
			if !a.json {
				fmt.Fprintf(a.stderr, "job %s\n", created.JobID)
			}
			r := a.logRenderer()
			if err := a.follow(cmd.Context(), created.JobID, false, r); err != nil {
				return err
			}
			return outcome(cmd.Context(), created.JobID, r.end)
		},
	}
	f := cmd.Flags()
	f.StringVar(&op, "op", "", "operation, such as hive_check or run")
	f.StringVar(&hive, "hive", "", "hive to run on (default: the queen places the job)")
	labels = labelsFlag(cmd)
	f.Var(&timeout, "timeout", "job deadline, in seconds or as a duration such as 10m")
	f.StringArrayVar(&fields, "field", nil, "request field as KEY=VALUE (repeatable)")
	f.StringVar(&body, "body", "", "request body as JSON, or - for stdin")
	f.StringVar(&key, "idempotency-key", "", "Idempotency-Key: resubmitting with the same key returns the same job")
	f.BoolVarP(&follow, "follow", "f", false, "follow the job's narration until it ends")
	return cmd
}

// buildRequest lays the flags over the body and decodes the result with the
// contract's strict decoder, so a misspelt field fails here, not silently.
func (a *app) buildRequest(cmd *cobra.Command, body, op, hive string, timeout *durationFlag, fields []string) (api.JobRequest, error) {
	m := map[string]any{}
	if body != "" {
		raw := []byte(body)
		if body == "-" {
			b, err := io.ReadAll(io.LimitReader(a.stdin, maxBodyBytes+1))
			if err != nil {
				return api.JobRequest{}, fmt.Errorf("read body from stdin: %w", err)
			}
			if len(b) > maxBodyBytes {
				return api.JobRequest{}, usagef(cmd, "body on stdin is larger than %d bytes", maxBodyBytes)
			}
			raw = b
		}
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		if err := dec.Decode(&m); err != nil || m == nil {
			return api.JobRequest{}, usagef(cmd, "--body must be a JSON object")
		}
	}
	kinds := requestFieldKinds()
	for _, kv := range fields {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return api.JobRequest{}, usagef(cmd, "--field %q: want KEY=VALUE", kv)
		}
		if kinds[k] == reflect.String {
			m[k] = v
			continue
		}
		var val any
		dec := json.NewDecoder(strings.NewReader(v))
		dec.UseNumber()
		if err := dec.Decode(&val); err != nil {
			if _, known := kinds[k]; known {
				return api.JobRequest{}, usagef(cmd, "--field %s: %q is not JSON", k, v)
			}
			// Unknown names pass through so the decoder below names them.
			val = v
		}
		m[k] = val
	}
	if op != "" {
		m["operation"] = op
	}
	if hive != "" {
		m["hive"] = hive
	}
	if timeout.d > 0 {
		m["timeout_s"] = timeout.seconds()
	}
	if _, ok := m["operation"]; !ok {
		return api.JobRequest{}, usagef(cmd, "--op is required (or an \"operation\" in --body)")
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return api.JobRequest{}, usagef(cmd, "encode request: %v", err)
	}
	req, err := api.DecodeJobRequest(bytes.NewReader(raw))
	if err != nil {
		return api.JobRequest{}, usagef(cmd, "request: %v", err)
	}
	return req, nil
}

// requestFieldKinds maps each JSON field of a job request, the envelope's
// and those of every operation's payload in the operation table, to its Go
// kind, pointers looked through, so --field knows which values are plain
// text.
func requestFieldKinds() map[string]reflect.Kind {
	kinds := map[string]reflect.Kind{}
	fieldKinds(reflect.TypeFor[api.JobRequest](), kinds)
	for _, spec := range api.Operations {
		if spec.Payload != nil {
			fieldKinds(reflect.TypeOf(spec.Payload()).Elem(), kinds)
		}
	}
	return kinds
}

// fieldKinds adds the JSON fields of struct type t to kinds.
func fieldKinds(t reflect.Type, kinds map[string]reflect.Kind) {
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" {
			continue
		}
		ft := f.Type
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		kinds[name] = ft.Kind()
	}
}

func (a *app) jobsListCommand() *cobra.Command {
	var filter client.JobFilter
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List jobs, newest first",
		Args:    exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if filter.Limit < 0 {
				return usagef(cmd, "--limit must not be negative")
			}
			list, err := a.client.ListJobs(cmd.Context(), filter)
			if err != nil {
				return fmt.Errorf("list jobs: %w", err)
			}
			if a.json {
				return writeJSON(a.stdout, list)
			}
			now := time.Now()
			tw := tabwriter.NewWriter(a.stdout, 0, 8, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tOPERATION\tHIVE\tSTATE\tCREATED\tDURATION")
			for _, j := range list.Jobs {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", j.JobID, j.Operation, orDash(j.Hive), j.State,
					j.CreatedAt.Local().Format(time.DateTime), jobDuration(j, now))
			}
			return tw.Flush()
		},
	}
	f := cmd.Flags()
	f.StringVar(&filter.State, "state", "", "only jobs in this state")
	f.StringVar(&filter.Operation, "operation", "", "only jobs of this operation")
	f.StringVar(&filter.Hive, "hive", "", "only jobs on this hive")
	f.IntVar(&filter.Limit, "limit", 0, "at most this many jobs (default: the queen's)")
	return cmd
}

// jobDuration is how long a job ran, or has been running; "-" before start.
func jobDuration(j api.Job, now time.Time) string {
	switch {
	case j.StartedAt == nil:
		return "-"
	case j.FinishedAt != nil:
		return fmtDuration(j.FinishedAt.Sub(*j.StartedAt))
	case api.Terminal(j.State):
		return "-"
	}
	return fmtDuration(now.Sub(*j.StartedAt))
}

func (a *app) jobsGetCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "get ID",
		Short: "Show one job record",
		Args:  exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			j, err := a.client.GetJob(cmd.Context(), args[0])
			if err != nil {
				return fmt.Errorf("get job %s: %w", args[0], err)
			}
			if a.json {
				return writeJSON(a.stdout, j)
			}
			return printJob(a.stdout, j)
		},
	}
}

func printJob(w io.Writer, j api.Job) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	ts := func(t *time.Time) string {
		if t == nil || t.IsZero() {
			return "-"
		}
		return t.Local().Format(time.RFC3339Nano)
	}
	fmt.Fprintf(tw, "ID\t%s\n", j.JobID)
	fmt.Fprintf(tw, "OPERATION\t%s\n", j.Operation)
	fmt.Fprintf(tw, "HIVE\t%s\n", orDash(j.Hive))
	fmt.Fprintf(tw, "STATE\t%s\n", j.State)
	fmt.Fprintf(tw, "CREATED\t%s\n", ts(&j.CreatedAt))
	fmt.Fprintf(tw, "STARTED\t%s\n", ts(j.StartedAt))
	fmt.Fprintf(tw, "FINISHED\t%s\n", ts(j.FinishedAt))
	fmt.Fprintf(tw, "DURATION\t%s\n", jobDuration(j, time.Now()))
	fmt.Fprintf(tw, "DEADLINE\t%s\n", ts(&j.DeadlineAt))
	fmt.Fprintf(tw, "ATTEMPT\t%d\n", j.Attempt)
	if j.ExitCode != nil {
		fmt.Fprintf(tw, "EXIT CODE\t%d\n", *j.ExitCode)
	}
	if j.Error != "" {
		fmt.Fprintf(tw, "ERROR\t%s\n", j.Error)
	}
	if req, err := json.Marshal(j.Request); err == nil {
		fmt.Fprintf(tw, "REQUEST\t%s\n", req)
	}
	return tw.Flush()
}

func (a *app) jobsLogsCommand() *cobra.Command {
	var follow bool
	cmd := &cobra.Command{
		Use:   "logs ID [-f]",
		Short: "Print a job's narration; -f follows it live until the end",
		Long: `Print a job's narration: every event from the start, one line each, with
the output lines of run jobs on stdout and stderr as the command wrote them.

Without -f a finished job's whole history is printed; a job still going is
printed as far as the queen has it. With -f the job is followed live until
its end, and the exit code is its outcome: 0 done, 1 failed or cancelled.
An interrupt stops following; the job goes on.`,
		Args: exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, id := cmd.Context(), args[0]
			// Asking for the record first fails fast on a wrong id or an
			// unreachable queen, where the stream would keep retrying.
			j, err := a.client.GetJob(ctx, id)
			if err != nil {
				return fmt.Errorf("get job %s: %w", id, err)
			}
			r := a.logRenderer()
			if follow {
				if err := a.follow(ctx, id, false, r); err != nil {
					return err
				}
				return outcome(ctx, id, r.end)
			}
			if api.Terminal(j.State) {
				return a.follow(ctx, id, false, r)
			}
			err = a.client.History(ctx, id, r.frame)
			r.clearBar(true)
			if err == nil && r.end == nil && !a.json {
				fmt.Fprintf(a.stderr, "rbee: job %s is %s; these are its events so far (-f follows it)\n", id, j.State)
			}
			return err
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "follow the job live until it ends")
	return cmd
}

func (a *app) jobsCancelCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "cancel ID",
		Short: "Cancel a job; its end event confirms it",
		Args:  exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			resp, err := a.client.CancelJob(cmd.Context(), args[0])
			if err != nil {
				return fmt.Errorf("cancel job %s: %w", args[0], err)
			}
			if a.json {
				return writeJSON(a.stdout, resp)
			}
			_, err = fmt.Fprintf(a.stdout, "%s %s\n", resp.JobID, resp.State)
			return err
		},
	}
}

// logRenderer shows everything: the view of jobs logs and submit -f.
func (a *app) logRenderer() *renderer {
	return &renderer{a: a, jsonLines: a.json, narr: a.stdout, output: true, bars: a.isTerminal(a.stdout)}
}

// writeJSON prints v as one line of JSON.
func writeJSON(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// operationsHelp lists the operations a queen accepts, from the operation
// table, with what each does, the API key scope it needs and the fields of
// its payload.
func operationsHelp() string {
	var b strings.Builder
	b.WriteString("Operations:\n")
	for _, name := range api.OperationNames() {
		spec := api.Operations[name]
		where := ""
		if spec.OnQueen {
			where = ", on the queen"
		}
		fmt.Fprintf(&b, "  %-20s %s (scope %s%s)\n", name, spec.Summary, api.ScopeForOperation(name), where)
		if fields := spec.Fields(); len(fields) > 0 {
			fmt.Fprintf(&b, "  %-20s fields: %s\n", "", strings.Join(fields, ", "))
		}
	}
	return strings.TrimSuffix(b.String(), "\n")
}
