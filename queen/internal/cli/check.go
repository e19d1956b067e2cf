package cli

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"rbee.dev/queen/internal/client"
	"rbee.dev/shared/api"
)

// checkSummary is what `rbee check` reports, and its --json shape.
type checkSummary struct {
	JobID      string  `json:"job_id"`
	State      string  `json:"state"`
	Error      string  `json:"error,omitempty"`
	Events     int     `json:"events"`
	InOrder    bool    `json:"in_order"`
	ElapsedS   float64 `json:"elapsed_s"`
	EventsPerS float64 `json:"events_per_s"`
}

func (a *app) checkCommand() *cobra.Command {
	var (
		hive         string
		events       int
		payloadBytes int
		timeout      durationFlag
	)
	var labels *[]string
	cmd := &cobra.Command{
		Use:   "check [--hive H] [--events N] [--payload-bytes B]",
		Short: "Run a hive_check self-test and summarise its narration",
		Long: `Run a hive_check self-test: the hive narrates --events events of
--payload-bytes each, and this command counts what arrives, checks that it
arrived in order, and reports the elapsed time and rate. It exits 1 when
the job fails or events arrive out of order. An interrupt cancels the job.`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			labelMap, err := parseKV(cmd, "label", *labels)
			if err != nil {
				return err
			}
			check := &api.HiveCheck{PayloadBytes: payloadBytes}
			if cmd.Flags().Changed("events") {
				check.Events = &events
			}
			req := api.JobRequest{Operation: api.OpHiveCheck, Hive: hive, Labels: labelMap, TimeoutS: timeout.seconds(), Payload: check}
			start := time.Now()
			created, err := a.createOwn(ctx, req)
			if err != nil {
				return err
			}
			sum := checkSummary{JobID: created.JobID, InOrder: true}
			var lastID, lastSeq uint64
			r := a.quietRenderer()
			r.onEvent = func(f client.Frame, ev api.Event) {
				// Stream ids are the NARR sequence and seq counts within
				// the job; both must only grow, or narration was reordered
				// or repeated on its way here.
				if (f.ID != 0 && f.ID <= lastID) || (lastSeq != 0 && ev.Seq <= lastSeq) {
					sum.InOrder = false
				}
				lastID, lastSeq = max(lastID, f.ID), max(lastSeq, ev.Seq)
				if f.Event != api.SSEEnd {
					sum.Events++
				}
			}
			if err := a.follow(ctx, created.JobID, true, r); err != nil {
				return err
			}
			elapsed := time.Since(start)
			sum.ElapsedS = elapsed.Seconds()
			if elapsed > 0 {
				sum.EventsPerS = float64(sum.Events) / elapsed.Seconds()
			}
			if r.end != nil {
				sum.State, sum.Error = r.end.State, r.end.Error
			}
			if a.json {
				if err := writeJSON(a.stdout, sum); err != nil {
					return err
				}
			} else {
				order := "in order"
				if !sum.InOrder {
					order = "OUT OF ORDER"
				}
				tw := tabwriter.NewWriter(a.stdout, 0, 8, 2, ' ', 0)
				fmt.Fprintf(tw, "job\t%s %s\n", sum.JobID, orDash(sum.State))
				fmt.Fprintf(tw, "events\t%d received, %s\n", sum.Events, order)
				fmt.Fprintf(tw, "elapsed\t%s\n", fmtDuration(elapsed))
				fmt.Fprintf(tw, "rate\t%.0f events/s\n", sum.EventsPerS)
				if err := tw.Flush(); err != nil {
					return err
				}
			}
			if err := outcome(ctx, created.JobID, r.end); err != nil {
				return err
			}
			if !sum.InOrder {
				return &exitError{code: exitFailure, msg: "job " + created.JobID + ": events arrived out of order"}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&hive, "hive", "", "hive to check (default: the queen places the job)")
	labels = labelsFlag(cmd)
	f.IntVar(&events, "events", api.DefaultCheckEvents, "narration events to emit")
	f.IntVar(&payloadBytes, "payload-bytes", 0, "filler bytes in each event")
	f.Var(&timeout, "timeout", "job deadline, in seconds or as a duration such as 10m")
	return cmd
}
