package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"rbee.dev/queen/internal/client"
	"rbee.dev/shared/api"
)

// hiveFlag adds the --hive flag that every model and worker command needs:
// models and workers belong to one hive, so the queen may not choose.
func hiveFlag(cmd *cobra.Command, hive *string) {
	cmd.PersistentFlags().StringVar(hive, "hive", "", "hive that holds the models and runs the workers (required)")
}

// hiveRequest completes and checks a request before it leaves, so a bad
// model id or source is a usage error here rather than a 400 from the queen.
func hiveRequest(cmd *cobra.Command, hive string, req api.JobRequest) (api.JobRequest, error) {
	if hive == "" {
		return req, usagef(cmd, "--hive is required: models and workers live on one hive")
	}
	req.Hive = hive
	if err := req.Validate(); err != nil {
		return req, usagef(cmd, "%v", err)
	}
	return req, nil
}

// resultJob submits req as a job this command owns, follows it into r (an
// interrupt cancels it) and returns the raw JSON of its data event's
// result, compacted but otherwise as the hive sent it, so --json passes on
// exactly what the hive said. It fails with the job's end error.
func (a *app) resultJob(ctx context.Context, req api.JobRequest, r *renderer) ([]byte, error) {
	created, err := a.createOwn(ctx, req)
	if err != nil {
		return nil, err
	}
	if a.verbose {
		fmt.Fprintf(a.stderr, "job %s\n", created.JobID)
	}
	var result []byte
	inner := r.onEvent
	r.onEvent = func(f client.Frame, ev api.Event) {
		if f.Event == api.SSEData {
			if raw, ok := rawData(f); ok {
				result = raw
			}
		}
		if inner != nil {
			inner(f, ev)
		}
	}
	if err := a.follow(ctx, created.JobID, true, r); err != nil {
		return nil, err
	}
	if err := outcome(ctx, created.JobID, r.end); err != nil {
		return nil, err
	}
	if result == nil {
		return nil, fmt.Errorf("job %s ended without a result", created.JobID)
	}
	return result, nil
}

// rawData is the compacted "data" member of a data event; a result that is
// absent or null reads as null, which decodes as an empty list or record.
func rawData(f client.Frame) ([]byte, bool) {
	var ev struct {
		Data json.RawMessage `json:"data"`
	}
	if json.Unmarshal(f.Data, &ev) != nil {
		return nil, false
	}
	if len(ev.Data) == 0 {
		return []byte("null"), true
	}
	var buf bytes.Buffer
	if json.Compact(&buf, ev.Data) != nil {
		return nil, false
	}
	return buf.Bytes(), true
}

// result is a hive job's result: the raw JSON of its data event and the
// operation that answered it.
type result struct {
	op  string
	raw []byte
}

// hiveResult checks req (hiveRequest), runs it on hive as a job this
// command owns (resultJob) and returns its result. r shows the job's
// narration; nil shows it only with --verbose.
func (a *app) hiveResult(cmd *cobra.Command, hive string, req api.JobRequest, r *renderer) (result, error) {
	req, err := hiveRequest(cmd, hive, req)
	if err != nil {
		return result{}, err
	}
	if r == nil {
		r = a.quietRenderer()
	}
	raw, err := a.resultJob(cmd.Context(), req, r)
	return result{op: req.Operation, raw: raw}, err
}

// printResult prints a hive job's result: its raw JSON as one line with
// --json, else show of it read as T, naming the job's operation when the
// hive sent something else.
func printResult[T any](a *app, res result, show func(T) error) error {
	if a.json {
		return a.writeRaw(res.raw)
	}
	var v T
	if err := json.Unmarshal(res.raw, &v); err != nil {
		return fmt.Errorf("%s result: %w", res.op, err)
	}
	return show(v)
}

// writeRaw prints a result's raw JSON as one line.
func (a *app) writeRaw(raw []byte) error {
	_, err := a.stdout.Write(append(raw, '\n'))
	return err
}

// humanCount writes a large count the way model sizes are spoken of:
// 7.24B, 135M, 1.5K; counts under a thousand as they are.
func humanCount(n uint64) string {
	if n < 1000 {
		return strconv.FormatUint(n, 10)
	}
	v := float64(n)
	for _, unit := range []string{"K", "M", "B", "T"} {
		v /= 1000
		// 999.7K reads better as 1M than as 1e+03K.
		if v < 999.5 || unit == "T" {
			return strconv.FormatFloat(v, 'g', 3, 64) + unit
		}
	}
	return strconv.FormatUint(n, 10)
}

// sizeText is humanBytes for the API's signed sizes.
func sizeText(n int64) string {
	if n <= 0 {
		return "-"
	}
	return humanBytes(uint64(n))
}

// localTime formats a record's time stamp, "-" when unset.
func localTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format(time.DateTime)
}

// ago says how long ago t was, "-" when unset.
func ago(t time.Time, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return fmtDuration(max(now.Sub(t), 0)) + " ago"
}
