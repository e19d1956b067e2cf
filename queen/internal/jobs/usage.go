package jobs

import (
	"context"
	"encoding/json"
	"sort"
	"time"

	"rbee.dev/shared/api"
	"rbee.dev/shared/bus"
)

// UnownedKey files the usage of jobs no key created: the queen's own jobs
// and jobs stored before jobs had owners.
const UnownedKey = "none"

// countUsage adds a finished inference job to the usage ledger. The
// applier calls it for every end event it applies; because it runs before
// the event is acknowledged, a queen that dies in between leaves the event
// to be delivered again, and the ledger's one-record-per-job rule (see
// store.RecordUsage) makes the repeat count nothing. The tokens are those
// the worker reported in the job's result, read from the narration of the
// writer that ended the job, so a lost hive's earlier attempt is never
// counted instead.
func (s *Service) countUsage(ctx context.Context, rec api.Job, writer string, end api.EndInfo) error {
	// The record decides, not the event: an end the record declined (it
	// had ended already) counts nothing.
	if rec.Operation != api.OpInfer || rec.State != api.StateDone || end.State != api.StateDone || max(end.Attempt, 1) < rec.Attempt {
		return nil
	}
	data, err := s.st.LastData(ctx, rec.JobID, writer)
	if err != nil || data == nil {
		return err // nil: the worker reported nothing to count
	}
	var e struct {
		Action string          `json:"action"`
		Data   api.InferResult `json:"data"`
	}
	if err := json.Unmarshal(data, &e); err != nil || e.Action != api.ActionResult {
		return nil
	}
	key, name := rec.Owner, rec.OwnerName
	if !bus.ValidToken(key) {
		key, name = UnownedKey, ""
	}
	t := end.Time
	if t.IsZero() {
		t = time.Now().UTC()
	}
	_, err = s.st.RecordUsage(ctx, api.UsageRecord{JobID: rec.JobID, KeyID: key, KeyName: name, Model: rec.Request.Model(),
		PromptTokens: max(0, int64(e.Data.Usage.PromptTokens)), CompletionTokens: max(0, int64(e.Data.Usage.CompletionTokens)), Time: t.UTC()})
	return err
}

// UsageQuery selects what Usage sums; zero fields match everything.
type UsageQuery struct {
	// KeyID keeps one key's usage.
	KeyID string
	// From and To bound the time a job ended: From inclusive, To exclusive.
	From, To time.Time
	Model    string
}

// Usage sums the ledger per key and model, sorted by key name, key id and
// model.
func (s *Service) Usage(ctx context.Context, q UsageQuery) ([]api.UsageRow, error) {
	type group struct{ key, model string }
	sums := map[group]*api.UsageRow{}
	err := s.st.ScanUsage(ctx, q.KeyID, q.From, func(r api.UsageRecord) {
		if (!q.From.IsZero() && r.Time.Before(q.From)) || (!q.To.IsZero() && !r.Time.Before(q.To)) || (q.Model != "" && r.Model != q.Model) {
			return
		}
		g := group{r.KeyID, r.Model}
		row := sums[g]
		if row == nil {
			row = &api.UsageRow{KeyID: r.KeyID, Model: r.Model}
			sums[g] = row
		}
		if r.KeyName != "" {
			row.KeyName = r.KeyName
		}
		row.Requests++
		row.PromptTokens += r.PromptTokens
		row.CompletionTokens += r.CompletionTokens
	})
	if err != nil {
		return nil, err
	}
	out := make([]api.UsageRow, 0, len(sums))
	for _, r := range sums {
		out = append(out, *r)
	}
	sort.Slice(out, func(i, k int) bool {
		a, b := out[i], out[k]
		if a.KeyName != b.KeyName {
			return a.KeyName < b.KeyName
		}
		if a.KeyID != b.KeyID {
			return a.KeyID < b.KeyID
		}
		return a.Model < b.Model
	})
	return out, nil
}
