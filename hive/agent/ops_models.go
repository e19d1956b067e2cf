package agent

import (
	"errors"
	"fmt"

	"rbee.dev/hive/internal/models"
	"rbee.dev/shared/api"
)

// modelList answers model_list with every model in the hive's catalog.
func (j *job) modelList() error {
	list, err := j.a.models.List()
	if err != nil {
		return err
	}
	for i := range list {
		list[i].Hive = j.a.cfg.ID
	}
	return j.p.Data(api.Event{
		Actor: "models", Action: "model_list", Data: list,
		Message: fmt.Sprintf("%d models on hive %s", len(list), j.a.cfg.ID),
	})
}

// modelGet answers model_get with one model's record.
func (j *job) modelGet(req *api.ModelRef) error {
	m, err := j.a.models.Get(req.ModelID)
	if err != nil {
		return j.modelError(req.ModelID, err)
	}
	m.Hive = j.a.cfg.ID
	return j.p.Data(api.Event{
		Actor: "models", Action: "model_get", Data: m,
		Message: fmt.Sprintf("model %s: %s", m.ModelID, describe(m)),
	})
}

// modelDelete removes a model from the catalog and answers with the record
// it had.
func (j *job) modelDelete(req *api.ModelRef) error {
	id := req.ModelID
	m, err := j.a.models.Get(id)
	if err != nil && !errors.Is(err, models.ErrNotFound) {
		return j.modelError(id, err)
	}
	if err := j.a.models.Delete(id); err != nil {
		return j.modelError(id, err)
	}
	if m.ModelID == "" {
		// Only a partial download was there; it is gone now.
		m = api.Model{ModelID: id}
	}
	m.Hive = j.a.cfg.ID
	return j.p.Data(api.Event{
		Actor: "models", Action: "model_delete", Data: m,
		Message: fmt.Sprintf("model %s deleted from hive %s (%s freed)", id, j.a.cfg.ID, models.HumanBytes(m.SizeBytes)),
	})
}

// modelDownload fetches a model into the catalog, narrating each step and
// the bytes as they arrive. Cancelling the job stops the transfer and
// leaves no partial file.
func (j *job) modelDownload(req *api.ModelDownload) error {
	var counted int64
	progress := func(done, total int64) {
		// Progress may restart from zero when a transfer starts over.
		if done > counted {
			j.a.m.bytesDownloaded.Add(float64(done - counted))
		}
		counted = done
		_ = j.p.Emit(api.Event{
			Actor: "download", Action: "progress", Message: models.ProgressText(done, total),
			Progress: &api.Progress{Done: done, Total: max(total, 0), Unit: "bytes"},
		})
	}
	say := func(level, msg string) {
		_ = j.p.Emit(api.Event{Actor: "download", Action: "step", Level: level, Message: msg})
	}
	m, err := j.a.models.Download(j.ctx, models.DownloadRequest{Source: req.Source, ModelID: req.ModelID, SHA256: req.SHA256}, progress, say)
	if err != nil {
		return err
	}
	m.Hive = j.a.cfg.ID
	return j.p.Data(api.Event{
		Actor: "models", Action: "model_download", Data: m,
		Message: fmt.Sprintf("model %s ready on hive %s: %s", m.ModelID, j.a.cfg.ID, describe(m)),
	})
}

// modelError names the hive in catalog errors, since the job's reader may
// not know which hive answered.
func (j *job) modelError(id string, err error) error {
	switch {
	case errors.Is(err, models.ErrNotFound):
		return fmt.Errorf("model %s not found on hive %s", id, j.a.cfg.ID)
	case errors.Is(err, models.ErrDownloading):
		return fmt.Errorf("model %s is being downloaded on hive %s; cancel that download job first", id, j.a.cfg.ID)
	}
	return err
}

// describe is a one-line summary of a model for narration.
func describe(m api.Model) string {
	s := models.HumanBytes(m.SizeBytes)
	if m.Architecture != "" {
		s += ", " + m.Architecture
	}
	if m.Parameters > 0 {
		s += fmt.Sprintf(", %.2fB parameters", float64(m.Parameters)/1e9)
	}
	if m.Quantization != "" {
		s += ", " + m.Quantization
	}
	if m.ContextLength > 0 {
		s += fmt.Sprintf(", context %d", m.ContextLength)
	}
	if m.VRAMEstimateBytes > 0 {
		s += ", about " + models.HumanBytes(int64(m.VRAMEstimateBytes)) + " VRAM at full context"
	}
	return s
}
