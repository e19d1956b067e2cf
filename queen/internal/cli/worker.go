package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"path"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"rbee.dev/queen/internal/client"
	"rbee.dev/shared/api"
)

func (a *app) workerCommand() *cobra.Command {
	var hive string
	cmd := &cobra.Command{
		Use:     "worker",
		Aliases: []string{"workers"},
		Short:   "Start, list, inspect and stop the inference workers of a hive",
		Long: `Start, list, inspect and stop inference workers: server processes a hive
supervises, each serving one model of its catalog with one backend of its
worker catalog. Every command runs a job on the hive named by --hive and
prints its result as a table, or the result's raw JSON with --json. An
interrupt cancels the job.`,
		Args: groupArgs,
		RunE: groupRun,
	}
	hiveFlag(cmd, &hive)
	cmd.AddCommand(a.workerCatalogCommand(&hive), a.workerSpawnCommand(&hive), a.workerListCommand(&hive),
		a.workerGetCommand(&hive), a.workerStopCommand(&hive), a.workerLogsCommand(&hive))
	return cmd
}

func (a *app) workerCatalogCommand(hive *string) *cobra.Command {
	return &cobra.Command{
		Use:   "catalog --hive H",
		Short: "List the worker backends a hive can start",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			res, err := a.hiveResult(cmd, *hive, api.JobRequest{Operation: api.OpWorkerCatalogList}, nil)
			if err != nil {
				return err
			}
			return printResult(a, res, func(bs []api.Backend) error {
				tw := tabwriter.NewWriter(a.stdout, 0, 8, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tKIND\tHEALTH\tCOMMAND")
				for _, b := range bs {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", b.Name, orDash(b.Kind), orDash(b.HealthPath), orDash(strings.Join(b.Command, " ")))
				}
				return tw.Flush()
			})
		},
	}
}

func (a *app) workerSpawnCommand(hive *string) *cobra.Command {
	var (
		model, backend string
		gpus           []int
		ctxSize        int
		maxConcurrent  int
		timeout        durationFlag
	)
	cmd := &cobra.Command{
		Use:   "spawn --hive H --model MODEL --backend NAME [--gpus 0,1] [--ctx-size N] [--max-concurrent N]",
		Short: "Start a worker serving a model, and wait until it is ready",
		Long: `Start a worker: a server process for a model of the hive's catalog, made
from a backend of its worker catalog (see "rbee worker catalog"). The
worker's startup output is printed on stderr as it comes; its record (id,
model, backend, URL, state) is printed once it answers its health check.
The job's deadline (--timeout, default 10m) bounds the wait; Ctrl-C cancels
the job, and the hive stops the half-started worker.`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if model == "" || backend == "" {
				return usagef(cmd, "--model and --backend are required")
			}
			r := a.quietRenderer()
			if !a.verbose && !a.json {
				r.onEvent = func(f client.Frame, ev api.Event) {
					if f.Event == api.SSENarration && ev.Actor == "worker" && ev.Action == "log" {
						fmt.Fprintln(a.stderr, ev.Message)
					}
				}
			}
			res, err := a.hiveResult(cmd, *hive, api.JobRequest{
				Operation: api.OpWorkerSpawn, TimeoutS: timeout.seconds(),
				Payload: &api.WorkerSpawn{ModelID: model, Backend: backend, GPUs: gpus, CtxSize: ctxSize, MaxConcurrent: maxConcurrent},
			}, r)
			if err != nil {
				return err
			}
			return printResult(a, res, a.printWorker)
		},
	}
	f := cmd.Flags()
	f.StringVar(&model, "model", "", "model id from the hive's catalog (required)")
	f.StringVar(&backend, "backend", "", "backend name from the hive's worker catalog, such as reference or llama-server (required)")
	f.IntSliceVar(&gpus, "gpus", nil, "GPU indexes the worker may use, such as 0,1 (default: the backend's choice)")
	f.IntVar(&ctxSize, "ctx-size", 0, "context size in tokens (default: the hive's, 4096)")
	f.IntVar(&maxConcurrent, "max-concurrent", 0, "requests the worker takes at once; the rest wait in the cluster's queue (default: the backend's, 4 for reference and llama-server)")
	f.Var(&timeout, "timeout", "how long the worker may take to become ready, in seconds or as a duration (default 10m)")
	return cmd
}

func (a *app) workerListCommand(hive *string) *cobra.Command {
	return &cobra.Command{
		Use:     "ls --hive H",
		Aliases: []string{"list"},
		Short:   "List a hive's workers",
		Args:    exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			res, err := a.hiveResult(cmd, *hive, api.JobRequest{Operation: api.OpWorkerList}, nil)
			if err != nil {
				return err
			}
			return printResult(a, res, func(ws []api.Worker) error {
				now := time.Now()
				tw := tabwriter.NewWriter(a.stdout, 0, 8, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tMODEL\tBACKEND\tSTATE\tURL\tGPUS\tRESTARTS\tSTARTED")
				for _, w := range ws {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", w.WorkerID, w.ModelID, w.Backend, w.State,
						orDash(w.URL), gpuList(w.GPUs), w.Restarts, ago(w.StartedAt, now))
				}
				return tw.Flush()
			})
		},
	}
}

func (a *app) workerGetCommand(hive *string) *cobra.Command {
	return &cobra.Command{
		Use:   "get WORKER --hive H",
		Short: "Show one worker's record",
		Args:  exactArgs("WORKER"),
		RunE: func(cmd *cobra.Command, args []string) error {
			res, err := a.hiveResult(cmd, *hive, api.JobRequest{Operation: api.OpWorkerGet, Payload: &api.WorkerRef{WorkerID: args[0]}}, nil)
			if err != nil {
				return err
			}
			return printResult(a, res, a.printWorker)
		},
	}
}

func (a *app) workerStopCommand(hive *string) *cobra.Command {
	return &cobra.Command{
		Use:   "stop WORKER --hive H",
		Short: "Stop a worker: SIGTERM, then SIGKILL after a grace period",
		Args:  exactArgs("WORKER"),
		RunE: func(cmd *cobra.Command, args []string) error {
			res, err := a.hiveResult(cmd, *hive, api.JobRequest{Operation: api.OpWorkerStop, Payload: &api.WorkerRef{WorkerID: args[0]}}, nil)
			if err != nil {
				return err
			}
			return printResult(a, res, func(w api.Worker) error {
				_, err = fmt.Fprintf(a.stdout, "worker %s stopped (%s on hive %s)\n", args[0], orDash(w.ModelID), orDash(w.Hive))
				return err
			})
		},
	}
}

// logFile says where a worker's whole output is on its hive: the hive
// writes it to <data dir>/workers/<id>.log, and its heartbeat names its
// data dir as the path of its disk.
func (a *app) logFile(ctx context.Context, hive, id string) string {
	dir := "<data dir>"
	if h, err := a.client.GetHive(ctx, hive); err == nil && h.Inventory.Disk.Path != "" {
		dir = h.Inventory.Disk.Path
	}
	return path.Join(dir, "workers", id+".log")
}

func (a *app) workerLogsCommand(hive *string) *cobra.Command {
	return &cobra.Command{
		Use:   "logs WORKER --hive H",
		Short: "Show a worker's record and its recent output, or where its log is",
		Long: `Show a worker's record and, when the hive sends them with it, its recent
output lines. A worker writes its whole output to <data dir>/workers/<id>.log
on its hive; when the hive's answer holds no lines, this command says so.`,
		Args: exactArgs("WORKER"),
		RunE: func(cmd *cobra.Command, args []string) error {
			res, err := a.hiveResult(cmd, *hive, api.JobRequest{Operation: api.OpWorkerGet, Payload: &api.WorkerRef{WorkerID: args[0]}}, nil)
			if err != nil {
				return err
			}
			return printResult(a, res, func(w api.Worker) error {
				if err := a.printWorker(w); err != nil {
					return err
				}
				// Hives may send the recent lines beside the record; read
				// them leniently so a record without them is not an error.
				var extra struct {
					Logs []string `json:"logs"`
				}
				_ = json.Unmarshal(res.raw, &extra)
				if extra.Logs == nil {
					fmt.Fprintf(a.stderr, "rbee: hive %s sends no log lines; worker %s's whole output is in %s on the hive\n",
						*hive, args[0], a.logFile(cmd.Context(), *hive, args[0]))
					return nil
				}
				fmt.Fprintln(a.stdout)
				for _, l := range extra.Logs {
					if _, err := fmt.Fprintln(a.stdout, l); err != nil {
						return err
					}
				}
				return nil
			})
		},
	}
}

// printWorker writes one worker record as aligned "NAME<TAB>value" lines.
func (a *app) printWorker(wk api.Worker) error {
	tw := tabwriter.NewWriter(a.stdout, 0, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "ID\t%s\n", wk.WorkerID)
	fmt.Fprintf(tw, "HIVE\t%s\n", orDash(wk.Hive))
	fmt.Fprintf(tw, "MODEL\t%s\n", wk.ModelID)
	fmt.Fprintf(tw, "BACKEND\t%s\n", wk.Backend)
	fmt.Fprintf(tw, "URL\t%s\n", orDash(wk.URL))
	fmt.Fprintf(tw, "STATE\t%s\n", wk.State)
	if wk.PID > 0 {
		fmt.Fprintf(tw, "PID\t%d\n", wk.PID)
	}
	fmt.Fprintf(tw, "GPUS\t%s\n", gpuList(wk.GPUs))
	if wk.CtxSize > 0 {
		fmt.Fprintf(tw, "CTX SIZE\t%d\n", wk.CtxSize)
	}
	fmt.Fprintf(tw, "STARTED\t%s\n", localTime(wk.StartedAt))
	fmt.Fprintf(tw, "RESTARTS\t%d\n", wk.Restarts)
	if wk.Error != "" {
		fmt.Fprintf(tw, "ERROR\t%s\n", wk.Error)
	}
	return tw.Flush()
}

// gpuList writes GPU indexes as the --gpus flag takes them: "0,1".
func gpuList(gpus []int) string {
	if len(gpus) == 0 {
		return "-"
	}
	s := make([]string, len(gpus))
	for i, g := range gpus {
		s[i] = strconv.Itoa(g)
	}
	return strings.Join(s, ",")
}
