package api

import "time"

// Hive is the heartbeat a hive writes into the hives bucket every few
// seconds, and what GET /v1/hives answers.
type Hive struct {
	ID          string            `json:"id"`
	Version     string            `json:"version"`
	StartedAt   time.Time         `json:"started_at"`
	HeartbeatAt time.Time         `json:"heartbeat_at"`
	Labels      map[string]string `json:"labels,omitempty"`
	AllowRun    bool              `json:"allow_run"`
	Slots       int               `json:"slots"`
	// AckWaitS is how long, in seconds, the hive's work queue waits for a
	// sign of life before it hands a job out again; the queen makes the
	// hive's work-queue consumer with it.
	AckWaitS  float64 `json:"ack_wait_s,omitempty"`
	SlotsFree int     `json:"slots_free"`
	// InferSlots bounds the inference jobs the hive holds at once. They do
	// not take job slots: Slots and SlotsFree count the other operations
	// only, so a long generation never holds up a spawn or a download.
	// Zero from a hive that predates it, whose infer jobs take job slots.
	InferSlots int `json:"infer_slots,omitempty"`
	// InferRunning is how many inference jobs the hive holds now, running
	// or waiting for a free place on a worker.
	InferRunning int `json:"infer_running"`
	// Running lists every job on the hive, inference included.
	Running     []string  `json:"running,omitempty"`
	MetricsAddr string    `json:"metrics_addr,omitempty"`
	Inventory   Inventory `json:"inventory"`
	Models      []Model   `json:"models"`
	Workers     []Worker  `json:"workers"`
	// Yielded lists the generations the hive handed back, without an
	// end, because their worker broke mid-stream and no other worker of
	// the model here could continue them: a queen moves each to another
	// hive, which continues it (api.Continuation).
	Yielded []Yielded `json:"yielded,omitempty"`
}

// Yielded is one attempt of a job that a hive handed back.
type Yielded struct {
	JobID   string `json:"job_id"`
	Attempt int    `json:"attempt"`
}

// Inventory is what a hive has to offer.
type Inventory struct {
	Hostname string `json:"hostname,omitempty"`
	OS       string `json:"os"`
	Arch     string `json:"arch"`
	CPU      CPU    `json:"cpu"`
	RAM      Memory `json:"ram"`
	Disk     Disk   `json:"disk"`
	GPUs     []GPU  `json:"gpus"`
}

// CPU describes the processor of a hive.
type CPU struct {
	Cores int     `json:"cores"`
	Load1 float64 `json:"load1"`
}

// Memory is a total and what is free of it, in bytes.
type Memory struct {
	TotalBytes uint64 `json:"total_bytes"`
	FreeBytes  uint64 `json:"free_bytes"`
}

// Disk is the space of the file system holding the hive's data directory.
type Disk struct {
	Path       string `json:"path"`
	TotalBytes uint64 `json:"total_bytes"`
	FreeBytes  uint64 `json:"free_bytes"`
}

// GPU is one accelerator of a hive.
type GPU struct {
	Index         int     `json:"index"`
	UUID          string  `json:"uuid,omitempty"`
	Name          string  `json:"name"`
	MemTotalBytes uint64  `json:"mem_total_bytes"`
	MemUsedBytes  uint64  `json:"mem_used_bytes"`
	MemFreeBytes  uint64  `json:"mem_free_bytes"`
	UtilPercent   float64 `json:"util_percent"`
	TemperatureC  float64 `json:"temperature_c,omitempty"`
	PowerWatts    float64 `json:"power_watts,omitempty"`
}

// Status is the cluster summary the status operation returns.
type Status struct {
	Hives       []HiveSummary  `json:"hives"`
	JobsByState map[string]int `json:"jobs_by_state"`
	GPUs        int            `json:"gpus"`
	Slots       int            `json:"slots"`
	SlotsFree   int            `json:"slots_free"`
}

// HiveSummary is one line of the cluster summary.
type HiveSummary struct {
	ID        string `json:"id"`
	Slots     int    `json:"slots"`
	SlotsFree int    `json:"slots_free"`
	GPUs      int    `json:"gpus"`
	AllowRun  bool   `json:"allow_run"`
}

// GPUSample is one GPU's reading from one hive heartbeat, as the queen
// keeps it for charts.
type GPUSample struct {
	Time         time.Time `json:"time"`
	UtilPercent  float64   `json:"util_percent"`
	MemUsedBytes uint64    `json:"mem_used_bytes"`
	// MemTotalBytes is sent with each sample: a MIG change or a driver
	// reload can change it while the hive runs.
	MemTotalBytes uint64  `json:"mem_total_bytes"`
	TemperatureC  float64 `json:"temperature_c,omitempty"`
	PowerWatts    float64 `json:"power_watts,omitempty"`
}

// GPUHistory is one GPU's recent samples, oldest first.
type GPUHistory struct {
	Index   int         `json:"index"`
	Name    string      `json:"name"`
	Samples []GPUSample `json:"samples"`
}

// GPUHistoryList is the answer to GET /v1/hives/<id>/gpu-history: what
// this queen has seen of the hive's GPUs over the last WindowS seconds.
// Each queen keeps its own, from the heartbeats it watched, so a queen
// that just started answers with less.
type GPUHistoryList struct {
	Hive    string       `json:"hive"`
	WindowS float64      `json:"window_s"`
	GPUs    []GPUHistory `json:"gpus"`
}
