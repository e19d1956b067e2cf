package agent

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"rbee.dev/shared/api"
)

// TestHiveSeriesExistAtZero checks that the hive's labelled series exist
// before anything is counted: every operation the hive runs, by end state,
// from the start, and a model's restart counter once its worker started.
func TestHiveSeriesExistAtZero(t *testing.T) {
	m := newHiveMetrics(&Agent{})
	count := func(name string) int {
		t.Helper()
		reg := prometheus.NewRegistry()
		reg.MustRegister(m.jobsRunning, m.jobsFinished, m.workerRestarts)
		fams, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range fams {
			if f.GetName() == name {
				return len(f.GetMetric())
			}
		}
		return 0
	}
	hiveOps := 0
	for _, op := range api.OperationNames() {
		if !api.Operations[op].OnQueen {
			hiveOps++
		}
	}
	if hiveOps == 0 {
		t.Fatal("no operation runs on a hive")
	}
	if got := count("rbee_hive_jobs_running"); got != hiveOps {
		t.Errorf("rbee_hive_jobs_running: %d series, want one per hive operation (%d)", got, hiveOps)
	}
	if got := count("rbee_hive_jobs_finished_total"); got != 3*hiveOps {
		t.Errorf("rbee_hive_jobs_finished_total: %d series, want done, failed and cancelled per hive operation (%d)", got, 3*hiveOps)
	}
	if got := count("rbee_hive_worker_restarts_total"); got != 0 {
		t.Errorf("restart series before any worker: %d", got)
	}
	m.knowWorker("qwen")
	m.knowWorker("qwen")
	if got := count("rbee_hive_worker_restarts_total"); got != 1 {
		t.Errorf("restart series after qwen's worker started: %d, want 1", got)
	}
}
