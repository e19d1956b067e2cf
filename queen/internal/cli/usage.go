package cli

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"rbee.dev/queen/internal/client"
)

func (a *app) usageCommand() *cobra.Command {
	var f client.UsageFilter
	cmd := &cobra.Command{
		Use:   "usage [--from DATE] [--to DATE] [--model MODEL]",
		Short: "Tokens used per API key and model (a key sees its own; admin sees all)",
		Long: "Sums the cluster's usage ledger: one row per key and model with its requests and prompt and completion tokens, " +
			"as every inference job's worker reported them. --from and --to take RFC 3339 times, YYYY-MM-DD dates (UTC) or Unix seconds; " +
			"a --to date includes that day.",
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			u, err := a.client.Usage(cmd.Context(), f)
			if err != nil {
				return fmt.Errorf("usage: %w", err)
			}
			if a.json {
				return writeJSON(a.stdout, u)
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 8, 2, ' ', 0)
			fmt.Fprintln(tw, "KEY\tNAME\tMODEL\tREQUESTS\tPROMPT\tCOMPLETION")
			for _, r := range u.Usage {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\n", r.KeyID, r.KeyName, r.Model, r.Requests, r.PromptTokens, r.CompletionTokens)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&f.From, "from", "", "first time or date counted")
	cmd.Flags().StringVar(&f.To, "to", "", "time counted up to (a date: through that day)")
	cmd.Flags().StringVar(&f.Model, "model", "", "only this model (or the model an alias names)")
	cmd.Flags().StringVar(&f.Key, "key", "", "only this key id (admin)")
	return cmd
}
