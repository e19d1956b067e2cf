package view

import (
	"testing"
	"time"

	"rbee.dev/shared/api"
)

func beat(id string, at time.Time, utils ...float64) api.Hive {
	h := api.Hive{ID: id, HeartbeatAt: at}
	for i, u := range utils {
		h.Inventory.GPUs = append(h.Inventory.GPUs, api.GPU{Index: i, Name: "A100", UtilPercent: u, MemUsedBytes: uint64(i + 1), MemTotalBytes: 10})
	}
	return h
}

// The history keeps each GPU's samples of the last window in order, skips
// heartbeats seen again, bounds its size and forgets hives gone quiet.
func TestGPUHistory(t *testing.T) {
	now := time.Now()
	var g gpuHistory
	g.record(beat("h1", now.Add(-20*time.Minute), 5, 6)) // older than the window
	g.record(beat("h1", now.Add(-2*time.Second), 10, 20))
	g.record(beat("h1", now.Add(-2*time.Second), 99, 99)) // replayed
	g.record(beat("h1", now.Add(-time.Second), 30, 40))
	g.record(beat("h2", now, 50))

	got := g.list("h1", now)
	if len(got) != 2 || got[0].Index != 0 || got[1].Index != 1 || got[0].Name != "A100" {
		t.Fatalf("gpus %+v", got)
	}
	if s := got[0].Samples; len(s) != 2 || s[0].UtilPercent != 10 || s[1].UtilPercent != 30 {
		t.Fatalf("gpu 0 samples %+v", s)
	}
	if s := got[1].Samples; len(s) != 2 || s[1].UtilPercent != 40 || s[1].MemUsedBytes != 2 || s[1].MemTotalBytes != 10 {
		t.Fatalf("gpu 1 samples %+v", s)
	}
	if got := g.list("nope", now); len(got) != 0 {
		t.Fatalf("unknown hive: %+v", got)
	}

	var b gpuHistory
	for i := range maxGPUSamples + 10 {
		b.record(beat("h1", now.Add(time.Duration(i-maxGPUSamples-10)*100*time.Millisecond), float64(i)))
	}
	if s := b.list("h1", now)[0].Samples; len(s) != maxGPUSamples || s[len(s)-1].UtilPercent != maxGPUSamples+9 {
		t.Fatalf("bounded ring: %d samples, last %+v", len(s), s[len(s)-1])
	}

	// A hive whose last heartbeat left the window is dropped by the next
	// sweep, at most sweepEvery later, when any hive records.
	var q gpuHistory
	q.record(beat("old", now.Add(-time.Second), 1))
	q.rings["old"][0].samples[0].Time = now.Add(-GPUWindow - time.Minute)
	q.record(beat("new", now, 1))
	if _, ok := q.rings["old"]; !ok {
		t.Fatal("swept before sweepEvery passed")
	}
	q.swept = q.swept.Add(-sweepEvery)
	q.record(beat("new", now, 1))
	if _, ok := q.rings["old"]; ok {
		t.Fatal("a hive gone quiet is kept")
	}
}
