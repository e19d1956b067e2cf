package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"rbee.dev/queen/internal/client"
	"rbee.dev/shared/api"
)

func (a *app) hiveCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "hive",
		Aliases: []string{"hives"},
		Short:   "List hives and ask them for their status",
		Args:    groupArgs,
		RunE:    groupRun,
	}
	cmd.AddCommand(a.hiveListCommand(), a.hiveGetCommand(), a.hiveStatusCommand())
	return cmd
}

func (a *app) hiveListCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List live hives",
		Args:    exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			list, err := a.client.ListHives(cmd.Context())
			if err != nil {
				return fmt.Errorf("list hives: %w", err)
			}
			if a.json {
				return writeJSON(a.stdout, list)
			}
			now := time.Now()
			tw := tabwriter.NewWriter(a.stdout, 0, 8, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tSLOTS FREE/TOTAL\tGPUS\tCPU CORES\tRAM\tALLOW RUN\tLAST HEARTBEAT")
			for _, h := range list.Hives {
				fmt.Fprintf(tw, "%s\t%d/%d\t%d\t%d\t%s\t%s\t%s ago\n", h.ID, h.SlotsFree, h.Slots,
					len(h.Inventory.GPUs), h.Inventory.CPU.Cores, humanBytes(h.Inventory.RAM.TotalBytes),
					yesNo(h.AllowRun), fmtDuration(max(now.Sub(h.HeartbeatAt), 0)))
			}
			return tw.Flush()
		},
	}
}

func (a *app) hiveGetCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "get HIVE",
		Short: "Show a hive's last heartbeat: slots, labels, inventory",
		Args:  exactArgs("HIVE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			h, err := a.client.GetHive(cmd.Context(), args[0])
			if err != nil {
				return fmt.Errorf("get hive %s: %w", args[0], err)
			}
			if a.json {
				return writeJSON(a.stdout, h)
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 8, 2, ' ', 0)
			fmt.Fprintf(tw, "hive\t%s (version %s)\n", h.ID, orDash(h.Version))
			fmt.Fprintf(tw, "slots\t%d free of %d\n", h.SlotsFree, h.Slots)
			if h.InferSlots > 0 {
				fmt.Fprintf(tw, "inference\t%d in hand of %d\n", h.InferRunning, h.InferSlots)
			}
			fmt.Fprintf(tw, "allow run\t%s\n", yesNo(h.AllowRun))
			fmt.Fprintf(tw, "heartbeat\t%s ago\n", fmtDuration(max(time.Since(h.HeartbeatAt), 0)))
			if len(h.Labels) > 0 {
				fmt.Fprintf(tw, "labels\t%s\n", joinLabels(h.Labels))
			}
			if len(h.Running) > 0 {
				fmt.Fprintf(tw, "running\t%s\n", strings.Join(h.Running, ", "))
			}
			printInventory(tw, h.Inventory)
			return tw.Flush()
		},
	}
}

func (a *app) hiveStatusCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "status HIVE",
		Short: "Ask a hive for its live inventory (a hive_status job)",
		Long: `Ask a hive for its live inventory: GPUs, CPU, RAM, disk, models and
workers. It runs a hive_status job on the hive and prints its result, or
the result's raw JSON with --json. An interrupt cancels the job.`,
		Args: exactArgs("HIVE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			created, err := a.createOwn(ctx, api.JobRequest{Operation: api.OpHiveStatus, Hive: args[0]})
			if err != nil {
				return err
			}
			var result []byte
			r := a.quietRenderer()
			r.onEvent = func(f client.Frame, ev api.Event) {
				if f.Event != api.SSEData || ev.Data == nil {
					return
				}
				// Keep the hive's own bytes, so --json passes on exactly
				// what it sent, field order and unknown fields included.
				var raw struct {
					Data json.RawMessage `json:"data"`
				}
				var buf bytes.Buffer
				if json.Unmarshal(f.Data, &raw) == nil && json.Compact(&buf, raw.Data) == nil {
					result = buf.Bytes()
				}
			}
			if err := a.follow(ctx, created.JobID, true, r); err != nil {
				return err
			}
			if err := outcome(ctx, created.JobID, r.end); err != nil {
				return err
			}
			if result == nil {
				return fmt.Errorf("job %s ended without a result", created.JobID)
			}
			if a.json {
				_, err := a.stdout.Write(append(result, '\n'))
				return err
			}
			return printStatus(a.stdout, args[0], result)
		},
	}
}

// quietRenderer collects results and keeps narration for -v, on stderr so
// stdout holds only the command's answer.
func (a *app) quietRenderer() *renderer {
	r := &renderer{a: a}
	if a.verbose {
		r.narr = a.stderr
	}
	return r
}

// statusResult is what the hive_status result is read as. Hives may send
// the inventory at the top level or under "inventory" beside other facts,
// so both are accepted; models and workers are listed by their ids.
type statusResult struct {
	ID        string            `json:"id"`
	Version   string            `json:"version"`
	Slots     *int              `json:"slots"`
	SlotsFree *int              `json:"slots_free"`
	AllowRun  *bool             `json:"allow_run"`
	Labels    map[string]string `json:"labels"`
	Running   []string          `json:"running"`
	Inventory *api.Inventory    `json:"inventory"`
	Models    []map[string]any  `json:"models"`
	Workers   []map[string]any  `json:"workers"`
}

func printStatus(w io.Writer, hive string, raw []byte) error {
	var res statusResult
	if err := json.Unmarshal(raw, &res); err != nil {
		return fmt.Errorf("hive %s status: %w", hive, err)
	}
	inv := res.Inventory
	if inv == nil {
		inv = new(api.Inventory)
		if err := json.Unmarshal(raw, inv); err != nil {
			return fmt.Errorf("hive %s status: %w", hive, err)
		}
	}
	if res.ID != "" {
		hive = res.ID
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	if res.Version != "" {
		hive += " (version " + res.Version + ")"
	}
	fmt.Fprintf(tw, "hive\t%s\n", hive)
	if res.Slots != nil && res.SlotsFree != nil {
		fmt.Fprintf(tw, "slots\t%d free of %d\n", *res.SlotsFree, *res.Slots)
	}
	if res.AllowRun != nil {
		fmt.Fprintf(tw, "allow run\t%s\n", yesNo(*res.AllowRun))
	}
	if len(res.Labels) > 0 {
		fmt.Fprintf(tw, "labels\t%s\n", joinLabels(res.Labels))
	}
	if len(res.Running) > 0 {
		fmt.Fprintf(tw, "running\t%s\n", strings.Join(res.Running, ", "))
	}
	printInventory(tw, *inv)
	if res.Models != nil {
		fmt.Fprintf(tw, "models\t%s\n", listIDs(res.Models, "model_id"))
	}
	if res.Workers != nil {
		fmt.Fprintf(tw, "workers\t%s\n", listIDs(res.Workers, "worker_id"))
	}
	return tw.Flush()
}

// printInventory writes an inventory as aligned "name<TAB>value" lines.
func printInventory(w io.Writer, inv api.Inventory) {
	host := inv.Hostname
	if host == "" {
		host = "-"
	}
	fmt.Fprintf(w, "host\t%s (%s/%s)\n", host, orDash(inv.OS), orDash(inv.Arch))
	fmt.Fprintf(w, "cpu\t%d cores, load %.2f\n", inv.CPU.Cores, inv.CPU.Load1)
	fmt.Fprintf(w, "ram\t%s free of %s\n", humanBytes(inv.RAM.FreeBytes), humanBytes(inv.RAM.TotalBytes))
	if inv.Disk.TotalBytes > 0 || inv.Disk.Path != "" {
		fmt.Fprintf(w, "disk\t%s free of %s (%s)\n", humanBytes(inv.Disk.FreeBytes), humanBytes(inv.Disk.TotalBytes), orDash(inv.Disk.Path))
	}
	fmt.Fprintf(w, "gpus\t%d\n", len(inv.GPUs))
	for _, g := range inv.GPUs {
		line := fmt.Sprintf("  gpu %d\t%s, %s free of %s, %.0f%% busy", g.Index, orDash(g.Name),
			humanBytes(g.MemFreeBytes), humanBytes(g.MemTotalBytes), g.UtilPercent)
		if g.TemperatureC > 0 {
			line += fmt.Sprintf(", %.0f°C", g.TemperatureC)
		}
		if g.PowerWatts > 0 {
			line += fmt.Sprintf(", %.0f W", g.PowerWatts)
		}
		fmt.Fprintln(w, line)
	}
}

// listIDs names the records of a list by their id field: "2: a, b".
func listIDs(items []map[string]any, key string) string {
	ids := make([]string, 0, len(items))
	for _, it := range items {
		if id, ok := it[key].(string); ok {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return fmt.Sprint(len(items))
	}
	return fmt.Sprintf("%d: %s", len(items), strings.Join(ids, ", "))
}

func joinLabels(labels map[string]string) string {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		keys[i] = k + "=" + labels[k]
	}
	return strings.Join(keys, ",")
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// humanBytes writes a byte count in binary units: "1.5 GiB".
func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// fmtDuration rounds a duration to what a person reads: 120ms, 1.5s, 2m3s.
func fmtDuration(d time.Duration) string {
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}
