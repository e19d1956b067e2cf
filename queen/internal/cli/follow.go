package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"

	"rbee.dev/queen/internal/client"
	"rbee.dev/shared/api"
)

// cancelGrace is how long an interrupted command waits for the end event
// that confirms its job was cancelled, so a Ctrl-C does not leave a command
// running on a hive while the terminal thinks it is gone.
const cancelGrace = 5 * time.Second

// renderer turns stream frames into output. Each command sets the parts it
// wants: the log view shows everything, run shows only the command's own
// output, check and hive status collect results and stay quiet.
type renderer struct {
	a *app
	// jsonLines prints every event as one line of JSON on stdout.
	jsonLines bool
	// narr receives human narration lines; nil drops them.
	narr io.Writer
	// output prints run jobs' stdout and stderr lines raw to ours.
	output bool
	// bars draws progress events as bars on narr, which is a terminal.
	bars bool
	// onEvent, when set, sees every decoded event before it is printed.
	onEvent func(client.Frame, api.Event)

	bar    *progressbar.ProgressBar
	barKey string

	// end is the job's end event, once it came.
	end *api.Event
}

// frame handles one stream frame.
func (r *renderer) frame(f client.Frame) error {
	ev, err := f.Decode()
	if err != nil {
		// One garbled event should not cost the rest of the job's output.
		if r.a.verbose {
			fmt.Fprintf(r.a.stderr, "rbee: skipping event %d: %v\n", f.ID, err)
		}
		return nil
	}
	if f.Event == api.SSEEnd {
		r.end = &ev
	}
	if r.onEvent != nil {
		r.onEvent(f, ev)
	}
	if r.narr == nil && !r.jsonLines && ev.Action == "job_created" && ev.Hive == "" && strings.Contains(ev.Message, " waits in the queue") {
		// Narration unshown, a job waiting for a hive would wait without
		// a word: the queen's reason is said once.
		fmt.Fprintf(r.a.stderr, "rbee: %s\n", strings.TrimPrefix(ev.Message, "job created: "))
	}
	if r.jsonLines {
		var buf bytes.Buffer
		if err := json.Compact(&buf, f.Data); err != nil {
			return nil
		}
		buf.WriteByte('\n')
		_, err := r.a.stdout.Write(buf.Bytes())
		return err
	}
	if ev.Stream != "" && f.Event == api.SSENarration {
		if r.output {
			return r.printOutput(ev)
		}
		if r.narr == nil {
			return nil
		}
	}
	if r.narr == nil || (ev.Level == api.LevelDebug && !r.a.verbose) {
		return nil
	}
	switch f.Event {
	case api.SSEEnd:
		r.clearBar(true)
		_, err := fmt.Fprintln(r.narr, endLine(ev))
		return err
	case api.SSEData:
		r.clearBar(false)
		return r.printData(ev)
	}
	if ev.Progress != nil && ev.Progress.Total > 0 && r.bars {
		return r.progress(ev)
	}
	r.clearBar(false)
	_, err = fmt.Fprintln(r.narr, narrationLine(ev))
	return err
}

func (r *renderer) printOutput(ev api.Event) error {
	w := r.a.stdout
	if ev.Stream == "stderr" {
		w = r.a.stderr
	}
	if w == r.narr {
		r.clearBar(false)
	}
	line := ev.Message + "\n"
	if ev.Partial {
		line = ev.Message // the line goes on, or ended without a newline
	}
	_, err := io.WriteString(w, line)
	return err
}

func (r *renderer) printData(ev api.Event) error {
	if _, err := fmt.Fprintln(r.narr, narrationLine(ev)); err != nil {
		return err
	}
	if ev.Data == nil {
		return nil
	}
	b, err := json.MarshalIndent(ev.Data, "  ", "  ")
	if err != nil {
		return nil
	}
	_, err = fmt.Fprintf(r.narr, "  %s\n", b)
	return err
}

// progress draws one bar per step; a step is an actor's action.
func (r *renderer) progress(ev api.Event) error {
	key := ev.Actor + "\x00" + ev.Action
	if r.bar == nil || r.barKey != key {
		r.clearBar(false)
		bytesUnit := ev.Progress.Unit == "bytes" || ev.Progress.Unit == "B"
		opts := []progressbar.Option{
			progressbar.OptionSetWriter(r.narr),
			progressbar.OptionSetDescription(ev.Actor + " " + ev.Action),
			progressbar.OptionSetWidth(30),
			progressbar.OptionThrottle(65 * time.Millisecond),
			progressbar.OptionShowBytes(bytesUnit),
			progressbar.OptionClearOnFinish(),
			progressbar.OptionShowCount(),
		}
		if !bytesUnit && ev.Progress.Unit != "" {
			opts = append(opts, progressbar.OptionSetItsString(ev.Progress.Unit))
		}
		r.bar = progressbar.NewOptions64(ev.Progress.Total, opts...)
		r.barKey = key
	}
	if ev.Progress.Total != r.bar.GetMax64() {
		r.bar.ChangeMax64(ev.Progress.Total)
	}
	if err := r.bar.Set64(ev.Progress.Done); err != nil {
		return err
	}
	if ev.Progress.Done >= ev.Progress.Total {
		// The bar clears itself when full; leave a line in the scrollback
		// so the finished step is still visible.
		r.clearBar(true)
		_, err := fmt.Fprintln(r.narr, narrationLine(ev))
		return err
	}
	return nil
}

// clearBar wipes the bar off its line before other output takes the line.
// A dropped bar is gone for good; one only cleared redraws on its next
// update.
func (r *renderer) clearBar(drop bool) {
	if r.bar == nil {
		return
	}
	_ = r.bar.Clear()
	if drop {
		_ = r.bar.Exit()
		r.bar, r.barKey = nil, ""
	}
}

// narrationLine is the human form of an event: time, actor, action, level
// when it matters, message and progress.
func narrationLine(ev api.Event) string {
	var b bytes.Buffer
	b.WriteString(ev.Time.Local().Format("15:04:05.000"))
	b.WriteByte(' ')
	b.WriteString(orDash(ev.Actor))
	b.WriteByte(' ')
	b.WriteString(orDash(ev.Action))
	switch ev.Level {
	case api.LevelWarn:
		b.WriteString(" WARN")
	case api.LevelError:
		b.WriteString(" ERROR")
	}
	if ev.Message != "" {
		b.WriteByte(' ')
		b.WriteString(ev.Message)
	}
	if p := ev.Progress; p != nil {
		switch {
		case p.Total > 0:
			fmt.Fprintf(&b, " [%d/%d", p.Done, p.Total)
		default:
			fmt.Fprintf(&b, " [%d", p.Done)
		}
		if p.Unit != "" {
			b.WriteString(" " + p.Unit)
		}
		b.WriteByte(']')
	}
	return b.String()
}

// endLine is the human form of the end event.
func endLine(ev api.Event) string {
	action := ev.Action
	if action == "" {
		action = "end"
	}
	s := fmt.Sprintf("%s %s %s %s", ev.Time.Local().Format("15:04:05.000"), orDash(ev.Actor), action, orDash(ev.State))
	if ev.ExitCode != nil {
		s += fmt.Sprintf(" (exit code %d)", *ev.ExitCode)
	}
	if ev.Error != "" {
		s += ": " + ev.Error
	}
	return s
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// createOwn submits a job that this command will follow and own. The
// request outlives an interrupt that comes while it is in flight: the job
// may exist by then, and only with its id can follow cancel it.
func (a *app) createOwn(ctx context.Context, req api.JobRequest) (api.CreateJobResponse, error) {
	created, err := a.client.CreateJob(context.WithoutCancel(ctx), req, "")
	if err != nil {
		return created, fmt.Errorf("submit %s job: %w", req.Operation, err)
	}
	return created, nil
}

// follow streams a job's events into r until the end. With own set, the
// job is this command's to stop: an interrupt cancels it and waits up to
// cancelGrace for the end event that confirms it. Otherwise an interrupt
// only stops following. It returns the stream's error; r.end says how the
// job ended, if it did.
func (a *app) follow(ctx context.Context, jobID string, own bool, r *renderer) error {
	if !own {
		err := a.client.Stream(ctx, jobID, 0, r.frame)
		r.clearBar(true)
		return err
	}
	// The stream outlives the interrupt by up to cancelGrace, so it runs
	// on a context of its own that the watcher below ends.
	streamCtx, stopStream := context.WithCancel(context.WithoutCancel(ctx))
	defer stopStream()
	finished := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-finished:
			return
		case <-ctx.Done():
		}
		select {
		case <-finished:
			// The job ended as the interrupt came; nothing to cancel.
			return
		default:
		}
		grace := time.AfterFunc(cancelGrace, stopStream)
		defer grace.Stop()
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cancelGrace)
		defer cancel()
		if _, err := a.client.CancelJob(cctx, jobID); err != nil && !client.IsStatus(err, 409) {
			fmt.Fprintf(a.stderr, "rbee: cancel job %s: %v\n", jobID, err)
		}
		select {
		case <-finished:
		case <-streamCtx.Done():
		}
	}()
	err := a.client.Stream(streamCtx, jobID, 0, r.frame)
	close(finished)
	wg.Wait()
	r.clearBar(true)
	if err != nil && ctx.Err() != nil && r.end == nil {
		return &exitError{code: exitInterrupted, msg: fmt.Sprintf("interrupted; job %s did not confirm the cancel within %s", jobID, cancelGrace)}
	}
	return err
}

// outcome turns the end of a followed job into the command's result: nil
// when done, an exit 1 naming the reason otherwise, and 130 when the job
// was cancelled because this command was interrupted.
func outcome(ctx context.Context, jobID string, end *api.Event) error {
	switch {
	case end == nil:
		return errors.New("stream of job " + jobID + " ended without an end event")
	case end.State == api.StateDone:
		return nil
	case end.State == api.StateCancelled && ctx.Err() != nil:
		return &exitError{code: exitInterrupted, msg: "interrupted; job " + jobID + " cancelled"}
	case end.State == api.StateCancelled:
		return &exitError{code: exitFailure, msg: "job " + jobID + " was cancelled"}
	case end.Error != "":
		return &exitError{code: exitFailure, msg: "job " + jobID + " " + end.State + ": " + end.Error}
	}
	return &exitError{code: exitFailure, msg: "job " + jobID + " " + end.State}
}
