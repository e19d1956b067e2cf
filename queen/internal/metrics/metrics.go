// Package metrics defines the queen's Prometheus metrics on a registry of
// its own. Labels stay low-cardinality: operations, states, routes and
// codes, never job ids.
package metrics

import (
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"rbee.dev/shared/api"
)

// Reasons a narration frame is rejected: the label values of
// rbee_narration_rejected_total.
const (
	// RejectWriter: a hive wrote for a job attempt it was not given.
	RejectWriter = "writer"
	// RejectInvalid: the body is not an event of the subject's job.
	RejectInvalid = "invalid"
	// RejectNotTerminal: an end whose state is not a terminal one.
	RejectNotTerminal = "not_terminal"
	// RejectSequence: a job sequence of 0, or one far beyond the last.
	RejectSequence = "sequence"
)

// Outcomes of an OpenAI-compatible request: the status label values of
// rbee_inference_requests_total.
const (
	InferOK            = "ok"
	InferFailed        = "failed"
	InferBusy          = "busy"
	InferRateLimited   = "rate_limited"
	InferCancelled     = "cancelled"
	InferModelNotFound = "model_not_found"
	InferUnavailable   = "unavailable"
	InferForbidden     = "forbidden"
	InferBadRequest    = "bad_request"
)

// InferStatuses lists every outcome, each exported at 0 for a model once
// it is known.
var InferStatuses = []string{InferOK, InferFailed, InferBusy, InferRateLimited, InferCancelled, InferModelNotFound, InferUnavailable, InferForbidden, InferBadRequest}

// UnknownModel is the model label of requests for a model no hive has:
// request bodies must not mint series.
const UnknownModel = "unknown"

// endStates are the states a job ends in: the state label values of the
// job end counters.
var endStates = []string{api.StateDone, api.StateFailed, api.StateCancelled}

// Queen holds the queen's metrics.
type Queen struct {
	Registry *prometheus.Registry
	// Gatherer is what /metrics serves: the registry, plus an in-process
	// hive's registry when the queen runs one.
	Gatherer prometheus.Gatherer

	JobsCreated   *prometheus.CounterVec
	JobsFinished  *prometheus.CounterVec
	JobDuration   *prometheus.HistogramVec
	JobQueueWait  *prometheus.HistogramVec
	HTTPRequests  *prometheus.CounterVec
	HTTPDuration  *prometheus.HistogramVec
	NATSReconnect prometheus.Counter
	// NarrationRejected counts narration frames dropped because their
	// writer may not write them or they are not valid events, by reason.
	NarrationRejected *prometheus.CounterVec

	InferRequests        *prometheus.CounterVec
	InferTokens          *prometheus.CounterVec
	InferTTFT            *prometheus.HistogramVec
	InferTokensPerSecond *prometheus.HistogramVec

	keysMu sync.Mutex
	keys   map[string]bool

	modelsMu sync.Mutex
	models   map[string]bool
}

// MaxKeyLabels bounds the distinct values of the key label; keys past it
// are counted as "other".
const MaxKeyLabels = 100

// KeyLabel is the key label for a key's name: the name itself for the
// first MaxKeyLabels names seen, "other" after, so that minting keys cannot
// mint series without bound.
func (m *Queen) KeyLabel(name string) string {
	if name == "" {
		return "none"
	}
	m.keysMu.Lock()
	defer m.keysMu.Unlock()
	if m.keys == nil {
		m.keys = map[string]bool{}
	}
	if !m.keys[name] {
		if len(m.keys) >= MaxKeyLabels {
			return "other"
		}
		m.keys[name] = true
	}
	return name
}

// KnowModel exports a model's inference series at 0 the first time a
// request names it, so a rate over them works before its first answer.
// Only models some hive serves or holds, or that a key with the operate
// scope asks to download, are passed here: request bodies cannot mint
// series.
func (m *Queen) KnowModel(model string) {
	m.modelsMu.Lock()
	defer m.modelsMu.Unlock()
	if m.models[model] {
		return
	}
	if m.models == nil {
		m.models = map[string]bool{}
	}
	m.models[model] = true
	for _, st := range InferStatuses {
		m.InferRequests.WithLabelValues(model, st)
	}
	m.InferTTFT.WithLabelValues(model)
	m.InferTokensPerSecond.WithLabelValues(model)
}

// Gauges are read at scrape time from the parts that own the numbers.
type Gauges struct {
	JobsByState   func() map[string]int
	HivesOnline   func() int
	SSEClients    func() int
	Relayed       func() uint64
	SSEOverflows  func() uint64
	NATSConnected func() bool
	// NATSTraffic is the queen's NATS connection's message and byte
	// counts (nats.Conn.Stats): what the server sent it and what it sent
	// the server, so the cost of one more queen can be read off the
	// servers' egress without NATS monitoring.
	NATSTraffic func() nats.Statistics
}

// jobBuckets span a hive_check of a millisecond to a download of hours.
var jobBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400}

// New registers the queen's metrics, the Go and process collectors, and
// gauges read through g.
func New(g Gauges) *Queen {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := &Queen{
		Registry: reg,
		JobsCreated: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rbee_jobs_created_total", Help: "Jobs created through this queen, by operation.",
		}, []string{"operation"}),
		JobsFinished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rbee_jobs_finished_total", Help: "Jobs that reached a terminal state, by operation and state; each end is counted by one queen.",
		}, []string{"operation", "state"}),
		JobDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "rbee_job_duration_seconds", Help: "Time from job creation to its end, by operation.", Buckets: jobBuckets,
		}, []string{"operation"}),
		JobQueueWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "rbee_job_queue_wait_seconds", Help: "Time from job creation until a hive started it, by operation.", Buckets: jobBuckets,
		}, []string{"operation"}),
		HTTPRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rbee_http_requests_total", Help: "HTTP requests by route, method and status code.",
		}, []string{"route", "method", "code"}),
		HTTPDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "rbee_http_request_duration_seconds", Help: "HTTP request latency by route and method (streams: until the stream ends).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2.5, 12),
		}, []string{"route", "method"}),
		NATSReconnect: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rbee_nats_reconnects_total", Help: "Times the queen's NATS connection was re-established.",
		}),
		NarrationRejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rbee_narration_rejected_total", Help: "Narration frames dropped, never relayed or applied, by reason (writer, invalid, not_terminal, sequence).",
		}, []string{"reason"}),
	}
	m.InferRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rbee_inference_requests_total", Help: "OpenAI-compatible requests by model and outcome (ok, failed, busy, rate_limited, cancelled, model_not_found, unavailable, forbidden, bad_request).",
	}, []string{"model", "status"})
	m.InferTokens = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rbee_inference_tokens_total", Help: "Tokens by model, direction (in: prompt, out: completion) and API key name.",
	}, []string{"model", "direction", "key"})
	m.InferTTFT = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "rbee_inference_time_to_first_token_seconds", Help: "Time from request to the first token, by model.",
		Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
	}, []string{"model"})
	m.InferTokensPerSecond = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "rbee_inference_tokens_per_second", Help: "Generation speed after the first token, by model.",
		Buckets: prometheus.ExponentialBuckets(1, 2, 14),
	}, []string{"model"})
	reg.MustRegister(m.InferRequests, m.InferTokens, m.InferTTFT, m.InferTokensPerSecond)
	// Every series whose label values are known from the start is
	// exported from the start, at 0, so a dashboard or alert over it has
	// data before the first event it counts. The model label is known
	// later; KnowModel does the same for it.
	for _, r := range []string{RejectWriter, RejectInvalid, RejectNotTerminal, RejectSequence} {
		m.NarrationRejected.WithLabelValues(r)
	}
	for _, op := range api.OperationNames() {
		m.JobsCreated.WithLabelValues(op)
		m.JobDuration.WithLabelValues(op)
		m.JobQueueWait.WithLabelValues(op)
		for _, st := range endStates {
			m.JobsFinished.WithLabelValues(op, st)
		}
	}
	for _, st := range InferStatuses {
		m.InferRequests.WithLabelValues(UnknownModel, st)
	}
	m.Gatherer = reg
	reg.MustRegister(m.JobsCreated, m.JobsFinished, m.JobDuration, m.JobQueueWait, m.HTTPRequests, m.HTTPDuration, m.NATSReconnect, m.NarrationRejected)
	reg.MustRegister(&gauges{g: g,
		jobs:      prometheus.NewDesc("rbee_jobs", "Jobs known to this queen by state (records within retention).", []string{"state"}, nil),
		hives:     prometheus.NewDesc("rbee_hives_online", "Hives with a live heartbeat.", nil, nil),
		clients:   prometheus.NewDesc("rbee_sse_clients", "SSE clients connected to this queen.", nil, nil),
		relayed:   prometheus.NewDesc("rbee_narration_events_relayed_total", "Narration events this queen's live tail delivered to SSE clients.", nil, nil),
		overflows: prometheus.NewDesc("rbee_sse_client_overflows_total", "Times a slow SSE client was switched from the live feed to catching up from the stream.", nil, nil),
		connected: prometheus.NewDesc("rbee_nats_connected", "1 when the queen's NATS connection is up.", nil, nil),
		inMsgs:    prometheus.NewDesc("rbee_nats_received_messages_total", "Messages the queen's NATS connection received from the server.", nil, nil),
		inBytes:   prometheus.NewDesc("rbee_nats_received_bytes_total", "Message bytes (headers and payload, not protocol lines) the queen's NATS connection received from the server.", nil, nil),
		outMsgs:   prometheus.NewDesc("rbee_nats_sent_messages_total", "Messages the queen's NATS connection sent to the server.", nil, nil),
		outBytes:  prometheus.NewDesc("rbee_nats_sent_bytes_total", "Message bytes (headers and payload, not protocol lines) the queen's NATS connection sent to the server.", nil, nil),
	})
	return m
}

// ObserveEnd records a finished job.
func (m *Queen) ObserveEnd(operation, state string, created, finished time.Time) {
	m.JobsFinished.WithLabelValues(operation, state).Inc()
	m.JobDuration.WithLabelValues(operation).Observe(finished.Sub(created).Seconds())
}

// ObserveStart records a job that a hive started.
func (m *Queen) ObserveStart(operation string, created, started time.Time) {
	m.JobQueueWait.WithLabelValues(operation).Observe(started.Sub(created).Seconds())
}

type gauges struct {
	g                                                   Gauges
	jobs, hives, clients, relayed, overflows, connected *prometheus.Desc
	inMsgs, inBytes, outMsgs, outBytes                  *prometheus.Desc
}

func (c *gauges) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.jobs, c.hives, c.clients, c.relayed, c.overflows, c.connected, c.inMsgs, c.inBytes, c.outMsgs, c.outBytes} {
		ch <- d
	}
}

func (c *gauges) Collect(ch chan<- prometheus.Metric) {
	for _, state := range []string{"queued", "dispatched", "running", "cancelling", "done", "failed", "cancelled"} {
		ch <- prometheus.MustNewConstMetric(c.jobs, prometheus.GaugeValue, float64(c.g.JobsByState()[state]), state)
	}
	ch <- prometheus.MustNewConstMetric(c.hives, prometheus.GaugeValue, float64(c.g.HivesOnline()))
	ch <- prometheus.MustNewConstMetric(c.clients, prometheus.GaugeValue, float64(c.g.SSEClients()))
	ch <- prometheus.MustNewConstMetric(c.relayed, prometheus.CounterValue, float64(c.g.Relayed()))
	ch <- prometheus.MustNewConstMetric(c.overflows, prometheus.CounterValue, float64(c.g.SSEOverflows()))
	connected := 0.0
	if c.g.NATSConnected() {
		connected = 1
	}
	ch <- prometheus.MustNewConstMetric(c.connected, prometheus.GaugeValue, connected)
	st := c.g.NATSTraffic()
	ch <- prometheus.MustNewConstMetric(c.inMsgs, prometheus.CounterValue, float64(st.InMsgs))
	ch <- prometheus.MustNewConstMetric(c.inBytes, prometheus.CounterValue, float64(st.InBytes))
	ch <- prometheus.MustNewConstMetric(c.outMsgs, prometheus.CounterValue, float64(st.OutMsgs))
	ch <- prometheus.MustNewConstMetric(c.outBytes, prometheus.CounterValue, float64(st.OutBytes))
}
