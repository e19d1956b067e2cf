package agent

import (
	"slices"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"rbee.dev/shared/api"
)

// hiveMetrics are the hive's own series, on a registry of their own so the
// queen can serve an in-process hive's metrics beside its own.
type hiveMetrics struct {
	reg               *prometheus.Registry
	jobsRunning       *prometheus.GaugeVec
	jobsFinished      *prometheus.CounterVec
	heartbeatFailures prometheus.Counter
	bytesDownloaded   prometheus.Counter
	workerRestarts    *prometheus.CounterVec
}

func newHiveMetrics(a *Agent) *hiveMetrics {
	m := &hiveMetrics{
		reg: prometheus.NewRegistry(),
		jobsRunning: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "rbee_hive_jobs_running", Help: "Jobs running on this hive, by operation.",
		}, []string{"operation"}),
		jobsFinished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rbee_hive_jobs_finished_total", Help: "Jobs this hive ended, by operation and state.",
		}, []string{"operation", "state"}),
		heartbeatFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rbee_hive_heartbeat_failures_total", Help: "Heartbeats that could not be written.",
		}),
		bytesDownloaded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rbee_hive_model_downloaded_bytes_total", Help: "Model bytes downloaded by this hive.",
		}),
		workerRestarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rbee_hive_worker_restarts_total", Help: "Worker restarts after a crash, by model.",
		}, []string{"model"}),
	}
	m.reg.MustRegister(m.jobsRunning, m.jobsFinished, m.heartbeatFailures, m.bytesDownloaded, m.workerRestarts, &inventoryCollector{a: a})
	// Every series whose label values are known from the start is
	// exported from the start, at 0, so a dashboard or alert over it has
	// data before the first event it counts. Models are known later:
	// knowWorker does the same for them.
	for _, op := range api.OperationNames() {
		if api.Operations[op].OnQueen {
			continue
		}
		m.jobsRunning.WithLabelValues(op)
		for _, st := range []string{api.StateDone, api.StateFailed, api.StateCancelled} {
			m.jobsFinished.WithLabelValues(op, st)
		}
	}
	return m
}

// knowWorker exports a model's worker series at 0 once a worker for it
// has started, so the restart alert and panels see the model before its
// first crash.
func (m *hiveMetrics) knowWorker(model string) {
	m.workerRestarts.WithLabelValues(model)
}

// workerStates are the states rbee_hive_workers reports for every model
// with a worker, at 0 where no worker is in that state.
var workerStates = []string{api.WorkerStarting, api.WorkerReady, api.WorkerRestarting, api.WorkerStopping, api.WorkerStopped, api.WorkerFailed}

// Registry is the hive's metrics registry, without Go or process
// collectors: whoever serves it adds those once per process.
func (a *Agent) Registry() *prometheus.Registry { return a.m.reg }

var (
	gpuLabels   = []string{"hive", "gpu", "name", "uuid"}
	descGPUUsed = prometheus.NewDesc("rbee_hive_gpu_memory_used_bytes", "GPU memory in use.", gpuLabels, nil)
	descGPUTot  = prometheus.NewDesc("rbee_hive_gpu_memory_total_bytes", "GPU memory in all.", gpuLabels, nil)
	descGPUUtil = prometheus.NewDesc("rbee_hive_gpu_utilization_ratio", "GPU utilisation, 0 to 1.", gpuLabels, nil)
	descGPUTemp = prometheus.NewDesc("rbee_hive_gpu_temperature_celsius", "GPU temperature.", gpuLabels, nil)
	descGPUPow  = prometheus.NewDesc("rbee_hive_gpu_power_watts", "GPU power draw.", gpuLabels, nil)
	descSlots   = prometheus.NewDesc("rbee_hive_slots", "Job slots of this hive.", []string{"hive"}, nil)
	descFree    = prometheus.NewDesc("rbee_hive_slots_free", "Job slots free now.", []string{"hive"}, nil)
	descRAM     = prometheus.NewDesc("rbee_hive_memory_bytes", "Host memory, total and free.", []string{"hive", "kind"}, nil)
	descWorkers = prometheus.NewDesc("rbee_hive_workers", "Inference workers by model and state.", []string{"hive", "model", "state"}, nil)
)

// inventoryCollector reports the inventory of the last heartbeat, so a
// scrape never runs nvidia-smi itself.
type inventoryCollector struct{ a *Agent }

func (c *inventoryCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descGPUUsed, descGPUTot, descGPUUtil, descGPUTemp, descGPUPow, descSlots, descFree, descRAM, descWorkers} {
		ch <- d
	}
}

func (c *inventoryCollector) Collect(ch chan<- prometheus.Metric) {
	h := c.a.last()
	id := c.a.cfg.ID
	for _, g := range h.Inventory.GPUs {
		l := []string{id, strconv.Itoa(g.Index), g.Name, g.UUID}
		ch <- prometheus.MustNewConstMetric(descGPUUsed, prometheus.GaugeValue, float64(g.MemUsedBytes), l...)
		ch <- prometheus.MustNewConstMetric(descGPUTot, prometheus.GaugeValue, float64(g.MemTotalBytes), l...)
		ch <- prometheus.MustNewConstMetric(descGPUUtil, prometheus.GaugeValue, g.UtilPercent/100, l...)
		ch <- prometheus.MustNewConstMetric(descGPUTemp, prometheus.GaugeValue, g.TemperatureC, l...)
		ch <- prometheus.MustNewConstMetric(descGPUPow, prometheus.GaugeValue, g.PowerWatts, l...)
	}
	ch <- prometheus.MustNewConstMetric(descSlots, prometheus.GaugeValue, float64(c.a.cfg.Slots), id)
	ch <- prometheus.MustNewConstMetric(descFree, prometheus.GaugeValue, float64(c.a.slotsFree()), id)
	ch <- prometheus.MustNewConstMetric(descRAM, prometheus.GaugeValue, float64(h.Inventory.RAM.TotalBytes), id, "total")
	ch <- prometheus.MustNewConstMetric(descRAM, prometheus.GaugeValue, float64(h.Inventory.RAM.FreeBytes), id, "free")
	counts := map[string]map[string]int{}
	for _, w := range h.Workers {
		if counts[w.ModelID] == nil {
			counts[w.ModelID] = map[string]int{}
		}
		counts[w.ModelID][w.State]++
	}
	for model, byState := range counts {
		for _, st := range workerStates {
			ch <- prometheus.MustNewConstMetric(descWorkers, prometheus.GaugeValue, float64(byState[st]), id, model, st)
		}
		for st, n := range byState {
			if !slices.Contains(workerStates, st) {
				ch <- prometheus.MustNewConstMetric(descWorkers, prometheus.GaugeValue, float64(n), id, model, st)
			}
		}
	}
}

// observeEnd counts a job this hive ended.
func (m *hiveMetrics) observeEnd(op string, e api.Event) {
	m.jobsFinished.WithLabelValues(op, e.State).Inc()
}
