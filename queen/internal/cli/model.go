package cli

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"rbee.dev/queen/internal/client"
	"rbee.dev/shared/api"
)

// plainProgressStep is how far a download must get, in percent, before the
// next progress line where no bar can be drawn; plainProgressEvery spaces
// the lines of a download of unknown size.
const (
	plainProgressStep  = 10
	plainProgressEvery = 5 * time.Second
)

func (a *app) modelCommand() *cobra.Command {
	var hive string
	cmd := &cobra.Command{
		Use:     "model",
		Aliases: []string{"models"},
		Short:   "List, inspect, download and delete the models of a hive",
		Long: `List, inspect, download and delete the models in a hive's catalog. Every
command runs a job on the hive named by --hive and prints its result as a
table, or the result's raw JSON with --json. An interrupt cancels the job.`,
		Args: groupArgs,
		RunE: groupRun,
	}
	hiveFlag(cmd, &hive)
	cmd.AddCommand(a.modelListCommand(&hive), a.modelGetCommand(&hive), a.modelDownloadCommand(&hive), a.modelDeleteCommand(&hive))
	return cmd
}

func (a *app) modelListCommand(hive *string) *cobra.Command {
	return &cobra.Command{
		Use:     "ls --hive H",
		Aliases: []string{"list"},
		Short:   "List the models in a hive's catalog",
		Args:    exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			res, err := a.hiveResult(cmd, *hive, api.JobRequest{Operation: api.OpModelList}, nil)
			if err != nil {
				return err
			}
			return printResult(a, res, func(list []api.Model) error {
				tw := tabwriter.NewWriter(a.stdout, 0, 8, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tSIZE\tARCHITECTURE\tQUANTIZATION\tPARAMS\tCONTEXT\tEST. VRAM\tCREATED")
				for _, m := range list {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.ModelID, sizeText(m.SizeBytes), orDash(m.Architecture),
						orDash(m.Quantization), countOrDash(m.Parameters), countOrDash(m.ContextLength),
						bytesOrDash(m.VRAMEstimateBytes), localTime(m.CreatedAt))
				}
				return tw.Flush()
			})
		},
	}
}

func (a *app) modelGetCommand(hive *string) *cobra.Command {
	return &cobra.Command{
		Use:   "get MODEL --hive H",
		Short: "Show one model's record: size, architecture, quantization, context, VRAM",
		Args:  exactArgs("MODEL"),
		RunE: func(cmd *cobra.Command, args []string) error {
			res, err := a.hiveResult(cmd, *hive, api.JobRequest{Operation: api.OpModelGet, Payload: &api.ModelRef{ModelID: args[0]}}, nil)
			if err != nil {
				return err
			}
			return printResult(a, res, a.printModel)
		},
	}
}

func (a *app) modelDeleteCommand(hive *string) *cobra.Command {
	return &cobra.Command{
		Use:     "rm MODEL --hive H",
		Aliases: []string{"delete"},
		Short:   "Delete a model from a hive's catalog, or a partial download of it",
		Args:    exactArgs("MODEL"),
		RunE: func(cmd *cobra.Command, args []string) error {
			res, err := a.hiveResult(cmd, *hive, api.JobRequest{Operation: api.OpModelDelete, Payload: &api.ModelRef{ModelID: args[0]}}, nil)
			if err != nil {
				return err
			}
			return printResult(a, res, func(m api.Model) error {
				msg := fmt.Sprintf("model %s deleted from hive %s", args[0], orDash(m.Hive))
				if m.SizeBytes > 0 {
					msg += " (" + sizeText(m.SizeBytes) + " freed)"
				}
				_, err = fmt.Fprintln(a.stdout, msg)
				return err
			})
		},
	}
}

func (a *app) modelDownloadCommand(hive *string) *cobra.Command {
	var (
		id, sum string
		timeout durationFlag
	)
	cmd := &cobra.Command{
		Use:   "download SOURCE --hive H [--id ID] [--sha256 HEX]",
		Short: "Download a model into a hive's catalog, with live progress",
		Long: `Download a model into a hive's catalog. SOURCE is hf:<org>/<repo>[:<file>]
(without a file the hive picks a GGUF quantisation from the repo) or an
http(s) URL. The model id is --id, else derived from the file name. With
--sha256 the file is checked before it joins the catalog.

Progress shows as a bar on a terminal and as a line every 10% otherwise,
on stderr; the model's record (size, architecture, quantization,
parameters, context length, estimated VRAM) is printed when it is ready.
Ctrl-C cancels the job: the hive stops the transfer and removes the
partial file. A transfer the network broke is resumed by the hive itself.`,
		Args: exactArgs("SOURCE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			r := a.quietRenderer()
			var v *downloadView
			if !a.verbose && !a.json {
				v = &downloadView{w: a.stderr, bars: a.isTerminal(a.stderr)}
				r.onEvent = func(_ client.Frame, ev api.Event) { v.event(ev) }
			} else if a.verbose {
				r.bars = a.isTerminal(a.stderr)
			}
			res, err := a.hiveResult(cmd, *hive, api.JobRequest{
				Operation: api.OpModelDownload, TimeoutS: timeout.seconds(),
				Payload: &api.ModelDownload{Source: args[0], ModelID: id, SHA256: sum},
			}, r)
			if v != nil {
				v.finish()
			}
			if err != nil {
				return err
			}
			return printResult(a, res, a.printModel)
		},
	}
	f := cmd.Flags()
	f.StringVar(&id, "id", "", "model id in the catalog (default: from the file name)")
	f.StringVar(&sum, "sha256", "", "expected SHA-256 of the file, 64 hex digits")
	f.Var(&timeout, "timeout", "job deadline, in seconds or as a duration such as 2h (default 24h)")
	return cmd
}

// printModel writes one model record as aligned "NAME<TAB>value" lines.
func (a *app) printModel(m api.Model) error {
	tw := tabwriter.NewWriter(a.stdout, 0, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "ID\t%s\n", m.ModelID)
	fmt.Fprintf(tw, "HIVE\t%s\n", orDash(m.Hive))
	fmt.Fprintf(tw, "SIZE\t%s\n", sizeText(m.SizeBytes))
	fmt.Fprintf(tw, "ARCHITECTURE\t%s\n", orDash(m.Architecture))
	fmt.Fprintf(tw, "QUANTIZATION\t%s\n", orDash(m.Quantization))
	fmt.Fprintf(tw, "PARAMETERS\t%s\n", countOrDash(m.Parameters))
	fmt.Fprintf(tw, "CONTEXT LENGTH\t%s\n", countOrDash(m.ContextLength))
	fmt.Fprintf(tw, "EST. VRAM\t%s\n", bytesOrDash(m.VRAMEstimateBytes))
	fmt.Fprintf(tw, "FILE\t%s\n", orDash(m.File))
	fmt.Fprintf(tw, "SOURCE\t%s\n", orDash(m.Source))
	fmt.Fprintf(tw, "SHA256\t%s\n", orDash(m.SHA256))
	fmt.Fprintf(tw, "CREATED\t%s\n", localTime(m.CreatedAt))
	return tw.Flush()
}

func countOrDash(n uint64) string {
	if n == 0 {
		return "-"
	}
	return humanCount(n)
}

func bytesOrDash(n uint64) string {
	if n == 0 {
		return "-"
	}
	return humanBytes(n)
}

// downloadView shows a download job's narration to a person: the hive's
// step messages as lines, and its progress as a bar on a terminal or as a
// line every plainProgressStep percent elsewhere.
type downloadView struct {
	w    io.Writer
	bars bool

	bar *progressbar.ProgressBar
	// nextPct and lastLine pace the plain progress lines.
	nextPct  int64
	lastLine time.Time
}

func (v *downloadView) event(ev api.Event) {
	switch {
	case ev.Actor == "download" && ev.Progress != nil:
		v.progress(*ev.Progress)
	case ev.Actor == "download" && ev.Message != "":
		v.clear()
		prefix := ""
		if ev.Level == api.LevelWarn || ev.Level == api.LevelError {
			prefix = ev.Level + ": "
		}
		fmt.Fprintln(v.w, prefix+ev.Message)
	}
}

func (v *downloadView) progress(p api.Progress) {
	if v.bars {
		v.drawBar(p)
		return
	}
	done := humanBytes(uint64(max(p.Done, 0)))
	if p.Total > 0 {
		pct := p.Done * 100 / p.Total
		if pct < v.nextPct {
			return
		}
		v.nextPct = (pct/plainProgressStep + 1) * plainProgressStep
		fmt.Fprintf(v.w, "downloaded %s of %s (%d%%)\n", done, humanBytes(uint64(p.Total)), pct)
		return
	}
	now := time.Now()
	if !v.lastLine.IsZero() && now.Sub(v.lastLine) < plainProgressEvery {
		return
	}
	v.lastLine = now
	fmt.Fprintf(v.w, "downloaded %s\n", done)
}

// drawBar keeps one bar for the transfer, resized when the hive learns or
// changes the total (a restarted transfer).
func (v *downloadView) drawBar(p api.Progress) {
	total := p.Total
	if total <= 0 {
		total = -1
	}
	if v.bar == nil {
		v.bar = progressbar.NewOptions64(total,
			progressbar.OptionSetWriter(v.w),
			progressbar.OptionSetDescription("downloading"),
			progressbar.OptionSetWidth(30),
			progressbar.OptionThrottle(65*time.Millisecond),
			progressbar.OptionShowBytes(true),
			progressbar.OptionUseIECUnits(true),
			progressbar.OptionShowCount(),
			progressbar.OptionClearOnFinish(),
			// The spinner of an unknown size turns with each event rather
			// than on a timer: a timer's goroutine would draw between the
			// lines this view prints, and outlive the command.
			progressbar.OptionSetSpinnerChangeInterval(0),
		)
	}
	if total != v.bar.GetMax64() {
		v.bar.ChangeMax64(total)
	}
	_ = v.bar.Set64(p.Done)
}

// clear takes the bar off its line before a message uses it; the next
// progress event draws it again.
func (v *downloadView) clear() {
	if v.bar != nil {
		_ = v.bar.Clear()
	}
}

// finish removes the bar for good once the job has ended.
func (v *downloadView) finish() {
	if v.bar != nil {
		_ = v.bar.Clear()
		_ = v.bar.Exit()
		v.bar = nil
	}
}
