package view

import (
	"sort"
	"sync"
	"time"

	"rbee.dev/shared/api"
)

// GPUWindow is how far back the queen keeps GPU samples for charts.
const GPUWindow = 15 * time.Minute

// maxGPUSamples bounds each GPU's ring: a hive heartbeating faster than
// once a second still costs a fixed amount of memory.
const maxGPUSamples = 1024

// maxGPUs bounds how many GPUs of one hive are charted: a heartbeat's
// body is the hive's to write.
const maxGPUs = 64

// gpuRing is one GPU's samples, oldest first. It grows with the hive's
// heartbeats up to maxGPUSamples and sheds what falls out of the window.
type gpuRing struct {
	name    string
	samples []api.GPUSample
}

func (r *gpuRing) add(s api.GPUSample, cutoff time.Time) {
	if n := len(r.samples); n > 0 && !s.Time.After(r.samples[n-1].Time) {
		return // a heartbeat seen again (a re-watch replays the bucket)
	}
	drop := 0
	for drop < len(r.samples) && r.samples[drop].Time.Before(cutoff) {
		drop++
	}
	if len(r.samples)-drop >= maxGPUSamples {
		drop = len(r.samples) - maxGPUSamples + 1
	}
	if drop > 0 {
		r.samples = append(r.samples[:0], r.samples[drop:]...)
	}
	r.samples = append(r.samples, s)
}

// since copies the samples at or after cutoff.
func (r *gpuRing) since(cutoff time.Time) []api.GPUSample {
	i := sort.Search(len(r.samples), func(i int) bool { return !r.samples[i].Time.Before(cutoff) })
	return append([]api.GPUSample{}, r.samples[i:]...)
}

// newest is the time of the last sample; zero when there is none.
func (r *gpuRing) newest() time.Time {
	if len(r.samples) == 0 {
		return time.Time{}
	}
	return r.samples[len(r.samples)-1].Time
}

// gpuHistory keeps the last GPUWindow of GPU samples per hive and GPU, fed
// from heartbeats.
type gpuHistory struct {
	mu sync.Mutex
	// rings holds each hive's GPUs by index.
	rings map[string]map[int]*gpuRing
	// swept is when rings were last cleared of hives gone quiet.
	swept time.Time
}

// sweepEvery is how often record looks for hives whose samples have all
// left the window: a heartbeat costs what its own GPUs cost, not what the
// cluster's do.
const sweepEvery = time.Minute

// record adds a heartbeat's GPU readings. GPUs the hive no longer reports
// go at once; hives that stopped reporting go once their newest sample
// leaves the window.
func (g *gpuHistory) record(h api.Hive) {
	now := time.Now()
	// The hive's clock is its claim: a time ahead of the queen's would
	// keep its rings past the window for good.
	at := h.HeartbeatAt
	if at.IsZero() || at.After(now) {
		at = now
	}
	gpus := h.Inventory.GPUs
	if len(gpus) > maxGPUs {
		gpus = gpus[:maxGPUs]
	}
	cutoff := now.Add(-GPUWindow)
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.rings == nil {
		g.rings = map[string]map[int]*gpuRing{}
	}
	mine := g.rings[h.ID]
	if mine == nil {
		mine = map[int]*gpuRing{}
		g.rings[h.ID] = mine
	}
	present := make(map[int]bool, len(gpus))
	for _, gpu := range gpus {
		present[gpu.Index] = true
		r := mine[gpu.Index]
		if r == nil {
			r = &gpuRing{}
			mine[gpu.Index] = r
		}
		r.name = gpu.Name
		r.add(api.GPUSample{Time: at, UtilPercent: gpu.UtilPercent, MemUsedBytes: gpu.MemUsedBytes,
			MemTotalBytes: gpu.MemTotalBytes, TemperatureC: gpu.TemperatureC, PowerWatts: gpu.PowerWatts}, cutoff)
	}
	// A GPU the hive no longer reports goes, so a hive holds at most
	// maxGPUs rings.
	for i := range mine {
		if !present[i] {
			delete(mine, i)
		}
	}
	if len(mine) == 0 {
		delete(g.rings, h.ID)
	}
	if now.Sub(g.swept) < sweepEvery {
		return
	}
	g.swept = now
	for id, gpus := range g.rings {
		for i, r := range gpus {
			if r.newest().Before(cutoff) {
				delete(gpus, i)
			}
		}
		if len(gpus) == 0 {
			delete(g.rings, id)
		}
	}
}

// list returns a hive's GPUs with their samples of the last window,
// sorted by index.
func (g *gpuHistory) list(hive string, now time.Time) []api.GPUHistory {
	cutoff := now.Add(-GPUWindow)
	g.mu.Lock()
	out := []api.GPUHistory{}
	for i, r := range g.rings[hive] {
		out = append(out, api.GPUHistory{Index: i, Name: r.name, Samples: r.since(cutoff)})
	}
	g.mu.Unlock()
	sort.Slice(out, func(i, k int) bool { return out[i].Index < out[k].Index })
	return out
}

// GPUHistory returns what this queen saw of a hive's GPUs over the last
// GPUWindow, and whether the hive is live now.
func (v *View) GPUHistory(hive string) ([]api.GPUHistory, bool) {
	if _, ok := v.Hive(hive); !ok {
		return nil, false
	}
	return v.gpus.list(hive, time.Now()), true
}
