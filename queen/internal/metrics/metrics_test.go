package metrics_test

import (
	"testing"

	"github.com/nats-io/nats.go"

	"rbee.dev/queen/internal/metrics"
	"rbee.dev/shared/api"
)

func newQueen() *metrics.Queen {
	return metrics.New(metrics.Gauges{
		JobsByState: func() map[string]int { return nil }, HivesOnline: func() int { return 0 },
		SSEClients: func() int { return 0 }, Relayed: func() uint64 { return 0 }, SSEOverflows: func() uint64 { return 0 },
		NATSConnected: func() bool { return true },
		NATSTraffic:   func() nats.Statistics { return nats.Statistics{InMsgs: 3, InBytes: 300, OutMsgs: 2, OutBytes: 200} },
	})
}

// series counts the series of each metric family m's registry gathers.
func series(t *testing.T, m *metrics.Queen) map[string]int {
	t.Helper()
	fams, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, f := range fams {
		out[f.GetName()] = len(f.GetMetric())
	}
	return out
}

// TestSeriesExistAtZero checks that every series whose label values are
// known is exported before anything is counted, so that dashboards and
// alerts over it have data from the first scrape.
func TestSeriesExistAtZero(t *testing.T) {
	ops := len(api.OperationNames())
	got := series(t, newQueen())
	for name, want := range map[string]int{
		"rbee_jobs_created_total":             ops,
		"rbee_jobs_finished_total":            ops * 3, // done, failed, cancelled
		"rbee_job_duration_seconds":           ops,
		"rbee_job_queue_wait_seconds":         ops,
		"rbee_narration_rejected_total":       4,
		"rbee_inference_requests_total":       len(metrics.InferStatuses), // model "unknown"
		"rbee_inference_tokens_per_second":    0,
		"rbee_jobs":                           7,
		"rbee_hives_online":                   1,
		"rbee_nats_connected":                 1,
		"rbee_sse_client_overflows_total":     1,
		"rbee_narration_events_relayed_total": 1,
		"rbee_nats_received_messages_total":   1,
		"rbee_nats_received_bytes_total":      1,
		"rbee_nats_sent_messages_total":       1,
		"rbee_nats_sent_bytes_total":          1,
	} {
		if got[name] != want {
			t.Errorf("%s: %d series, want %d", name, got[name], want)
		}
	}
}

// TestKnowModel checks that a model's inference series appear at 0 once,
// the first time it is known.
func TestKnowModel(t *testing.T) {
	m := newQueen()
	before := series(t, m)
	m.KnowModel("demo")
	m.KnowModel("demo")
	after := series(t, m)
	for name, added := range map[string]int{
		"rbee_inference_requests_total":              len(metrics.InferStatuses),
		"rbee_inference_time_to_first_token_seconds": 1,
		"rbee_inference_tokens_per_second":           1,
	} {
		if after[name]-before[name] != added {
			t.Errorf("%s: %d series added, want %d", name, after[name]-before[name], added)
		}
	}
}

// TestNATSTraffic checks that the connection's counts are exported as
// they are read, each under its own name.
func TestNATSTraffic(t *testing.T) {
	fams, err := newQueen().Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			got[f.GetName()] = m.GetCounter().GetValue()
		}
	}
	for name, want := range map[string]float64{
		"rbee_nats_received_messages_total": 3, "rbee_nats_received_bytes_total": 300,
		"rbee_nats_sent_messages_total": 2, "rbee_nats_sent_bytes_total": 200,
	} {
		if got[name] != want {
			t.Errorf("%s = %g, want %g", name, got[name], want)
		}
	}
}
