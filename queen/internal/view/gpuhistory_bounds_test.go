package view

import (
	"testing"
	"time"

	"rbee.dev/shared/api"
)

// A hive writes its own heartbeat: thousands of GPUs with new indexes in
// every beat, stamped a century ahead, still leave it at most maxGPUs
// charts, which go when it stops reporting them.
func TestGPUHistoryBoundedAgainstHostileHeartbeats(t *testing.T) {
	var g gpuHistory
	future := time.Now().Add(100 * 365 * 24 * time.Hour)
	const perBeat = 2000
	for beat := 0; beat < 50; beat++ {
		h := api.Hive{ID: "evil", HeartbeatAt: future.Add(time.Duration(beat))}
		for i := 0; i < perBeat; i++ {
			h.Inventory.GPUs = append(h.Inventory.GPUs, api.GPU{Index: beat*perBeat + i})
		}
		g.record(h)
	}
	// An honest heartbeat later, without GPUs.
	g.record(api.Hive{ID: "good", HeartbeatAt: time.Now().Add(time.Hour)})
	n := 0
	for _, gpus := range g.rings {
		n += len(gpus)
	}
	if n > maxGPUs {
		t.Fatalf("the history holds %d GPU rings", n)
	}
}
