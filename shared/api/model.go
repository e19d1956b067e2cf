package api

import (
	"strings"
	"time"
)

// Model is one model file in a hive's catalog.
type Model struct {
	ModelID   string    `json:"model_id"`
	File      string    `json:"file"`
	SizeBytes int64     `json:"size_bytes"`
	SHA256    string    `json:"sha256,omitempty"`
	Source    string    `json:"source,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	Hive      string    `json:"hive,omitempty"`

	// GGUF metadata; zero when the file is not GGUF.
	Architecture  string `json:"architecture,omitempty"`
	Parameters    uint64 `json:"parameters,omitempty"`
	Quantization  string `json:"quantization,omitempty"`
	ContextLength uint64 `json:"context_length,omitempty"`
	// VRAMEstimateBytes is the estimated VRAM to serve the model at its
	// full context length (or the context asked for when spawning).
	VRAMEstimateBytes uint64 `json:"vram_estimate_bytes,omitempty"`
}

// Worker states.
const (
	WorkerStarting   = "starting"
	WorkerReady      = "ready"
	WorkerRestarting = "restarting"
	WorkerStopping   = "stopping"
	WorkerStopped    = "stopped"
	WorkerFailed     = "failed"
)

// Worker is one inference server process a hive supervises.
type Worker struct {
	WorkerID string `json:"worker_id"`
	ModelID  string `json:"model_id"`
	Backend  string `json:"backend"`
	Host     string `json:"host"`
	Port     int    `json:"port"`
	URL      string `json:"url"`
	State    string `json:"state"`
	PID      int    `json:"pid,omitempty"`
	GPUs     []int  `json:"gpus,omitempty"`
	CtxSize  int    `json:"ctx_size,omitempty"`
	// Parallel is how many requests the worker serves at once; the hive
	// holds further requests until one ends. Zero: no limit of its own.
	Parallel  int       `json:"parallel,omitempty"`
	StartedAt time.Time `json:"started_at"`
	Restarts  int       `json:"restarts"`
	Hive      string    `json:"hive,omitempty"`
	Error     string    `json:"error,omitempty"`
}

// Backend is one entry of a hive's worker catalog.
type Backend struct {
	Name string `json:"name"`
	// Kind is llama-server, vllm, command or reference.
	Kind string `json:"kind"`
	// Command is the argv template; placeholders {model}, {port}, {host},
	// {gpus} and {ctx} are filled in at spawn.
	Command    []string `json:"command"`
	HealthPath string   `json:"health_path"`
	// Parallel is how many requests one worker serves at once; 0 takes it
	// from the command (llama-server's --parallel, vLLM's --max-num-seqs)
	// or the kind's default. -1: no limit, the hive sends every request on.
	Parallel int `json:"parallel,omitempty"`
}

// MaxModelID is the longest model id accepted.
const MaxModelID = 128

// ValidModelID reports whether id can name a catalog entry: 1-128 letters,
// digits, '.', '_' or '-', not starting with '.', so it is always one plain
// file name and never a path.
func ValidModelID(id string) bool {
	if id == "" || len(id) > MaxModelID || id[0] == '.' || strings.Contains(id, "..") {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
