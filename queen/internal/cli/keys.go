package cli

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"rbee.dev/shared/api"
)

func (a *app) keysCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "keys",
		Aliases: []string{"key"},
		Short:   "Create, list and revoke API keys (needs the admin scope)",
		Args:    groupArgs,
		RunE:    groupRun,
	}
	var name, scopes string
	var limits api.KeyLimits
	create := &cobra.Command{
		Use:   "create --name NAME --scopes read,infer [--rpm N] [--tpm N] [--max-concurrent N] [--priority N]",
		Short: "Create a key; its secret is printed once",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := api.KeyRequest{Name: name, Scopes: strings.Split(scopes, ","), KeyLimits: limits}
			if err := req.Validate(); err != nil {
				return usagef(cmd, "%v", err)
			}
			k, err := a.client.CreateKey(cmd.Context(), req)
			if err != nil {
				return fmt.Errorf("create key: %w", err)
			}
			if a.json {
				return writeJSON(a.stdout, k)
			}
			fmt.Fprintf(a.stdout, "id      %s\nname    %s\nscopes  %s\n", k.ID, k.Name, strings.Join(k.Scopes, ","))
			if k.KeyLimits.Any() {
				fmt.Fprintf(a.stdout, "limits  %s\n", limitsText(k.KeyLimits))
			}
			fmt.Fprintf(a.stdout, "key     %s\n\nThe key is shown only now; store it (e.g. export RBEE_TOKEN=...).\n", k.Key)
			return nil
		},
	}
	create.Flags().StringVar(&name, "name", "", "what the key is for")
	create.Flags().StringVar(&scopes, "scopes", api.ScopeRead, "comma-separated: "+strings.Join(api.Scopes, ", "))
	create.Flags().IntVar(&limits.RPM, "rpm", 0, "OpenAI API requests per minute, over all queens (0: no limit)")
	create.Flags().IntVar(&limits.TPM, "tpm", 0, "OpenAI API tokens (prompt and completion) per minute, over all queens (0: no limit)")
	create.Flags().IntVar(&limits.MaxConcurrent, "max-concurrent", 0, "OpenAI API requests running at once, over all queens (0: no limit)")
	create.Flags().IntVar(&limits.Priority, "priority", 0, fmt.Sprintf("place of the key's waiting requests in a model's queue: higher goes first (0-%d)", api.MaxPriority))
	list := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List keys (never their secrets)",
		Args:    exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			keys, err := a.client.ListKeys(cmd.Context())
			if err != nil {
				return fmt.Errorf("list keys: %w", err)
			}
			if a.json {
				return writeJSON(a.stdout, keys)
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 8, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tNAME\tSCOPES\tLIMITS\tCREATED")
			for _, k := range keys.Keys {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", k.ID, k.Name, strings.Join(k.Scopes, ","), limitsText(k.KeyLimits), k.CreatedAt.Local().Format("2006-01-02 15:04:05"))
			}
			return tw.Flush()
		},
	}
	revoke := &cobra.Command{
		Use:     "revoke ID",
		Aliases: []string{"rm"},
		Short:   "Revoke a key on every queen",
		Args:    exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.client.RevokeKey(cmd.Context(), args[0]); err != nil {
				return fmt.Errorf("revoke key %s: %w", args[0], err)
			}
			fmt.Fprintf(a.stdout, "key %s revoked\n", args[0])
			return nil
		},
	}
	cmd.AddCommand(create, list, revoke)
	return cmd
}

// limitsText shows a key's limits as its create flags name them, or "-".
func limitsText(l api.KeyLimits) string {
	var out []string
	for _, f := range []struct {
		name string
		n    int
	}{{"rpm", l.RPM}, {"tpm", l.TPM}, {"max-concurrent", l.MaxConcurrent}, {"priority", l.Priority}} {
		if f.n > 0 {
			out = append(out, fmt.Sprintf("%s=%d", f.name, f.n))
		}
	}
	if len(out) == 0 {
		return "-"
	}
	return strings.Join(out, " ")
}
