package cli

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

func (a *app) queueCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "queue",
		Short: "Each model's inference queue over the cluster: running, capacity, and who waits in what order",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ql, err := a.client.Queue(cmd.Context())
			if err != nil {
				return fmt.Errorf("queue: %w", err)
			}
			if a.json {
				return writeJSON(a.stdout, ql)
			}
			if len(ql.Queues) == 0 {
				fmt.Fprintln(a.stdout, "no inference request is waiting or running")
				return nil
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 8, 2, ' ', 0)
			fmt.Fprintln(tw, "MODEL\tRUNNING\tCAPACITY\tPOSITION\tJOB\tOWNER\tPRIORITY\tWAITING SINCE")
			for _, q := range ql.Queues {
				capacity := "-"
				if q.Capacity > 0 {
					capacity = fmt.Sprint(q.Capacity)
				}
				fmt.Fprintf(tw, "%s\t%d\t%s\t\t\t\t\t\n", q.Model, q.Running, capacity)
				for _, w := range q.Waiting {
					job, owner := w.JobID, w.OwnerName
					if job == "" {
						job = "(another key's)"
					}
					fmt.Fprintf(tw, "\t\t\t%d\t%s\t%s\t%d\t%s\n", w.Position, job, owner, w.Priority, w.CreatedAt.Local().Format("15:04:05"))
				}
			}
			return tw.Flush()
		},
	}
}
