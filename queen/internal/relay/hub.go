// Package relay carries narration from JetStream to SSE clients. One live
// tail per queen reads every job's narration once and fans it out in memory
// to the clients of each job; history for late or resuming clients is read
// with direct gets, and a long one with a short-lived ordered consumer. A
// client costs a few dozen kilobytes, not a server-side consumer.
package relay

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"rbee.dev/queen/internal/store"
	"rbee.dev/shared/api"
	"rbee.dev/shared/bus"
)

// Frame is one stored narration message on its way to a client.
type Frame struct {
	Seq    uint64 // stream sequence: the SSE event id
	Writer string // who wrote it: a hive id or the queen
	Kind   string // narration subject kind
	Data   []byte // the event JSON, sent verbatim
	// Attempt is the attempt of an end frame, from its subject.
	Attempt int
	// Header holds the frame's claims (bus.Meta): the relay routes and
	// fences by them.
	Header nats.Header

	// decoded is set once c and reject hold what the frame claims; judged
	// once the hub accepted the frame for every client of its job.
	decoded, judged bool
	reject          string
	c               claims
}

// Event is the SSE event name of the frame.
func (f Frame) Event() string {
	switch f.Kind {
	case bus.KindData:
		return api.SSEData
	case bus.KindEnd:
		return api.SSEEnd
	}
	return api.SSENarration
}

// sub is one client's live feed. The hub never blocks on it: when its buffer
// is full the hub closes it, and the client catches up from the stream.
type sub struct {
	job string
	// ch holds pointers: one frame is shared by every client of its job,
	// and an idle client's buffer costs 8 bytes a slot.
	ch chan *Frame
}

// Hub is the queen's single live tail and its subscribers.
type Hub struct {
	narr   *store.NarrationReader
	log    *slog.Logger
	buffer int

	mu    sync.RWMutex
	subs  map[string]map[*sub]struct{}
	ready chan struct{}

	// seen is what the tail has read of each recent job. A replay reads
	// history at least that far: on a NATS cluster a history read may be
	// answered by a replica that lags behind the tail, and stopping where
	// it stops would leave a gap before the live feed.
	seenMu sync.Mutex
	seen   map[string]seenJob

	// tail is the stream sequence of the newest message the tail read.
	tail atomic.Uint64

	// overflows counts feeds closed because their client fell behind.
	overflows uint64
	relayed   atomic.Uint64

	// Records finds job records for frames whose attempt's hive the hub
	// did not read from the queen's events; set before Run.
	Records Records
	// Rejected counts a frame the live tail dropped, by reason; set before
	// Run, or nil.
	Rejected func(reason string)
}

// NewHub makes a hub that reads narr and whose clients buffer up to
// buffer frames.
func NewHub(narr *store.NarrationReader, log *slog.Logger, buffer int) *Hub {
	if buffer <= 0 {
		buffer = 4096
	}
	return &Hub{narr: narr, log: log.With("component", "relay"), buffer: buffer,
		subs: map[string]map[*sub]struct{}{}, ready: make(chan struct{}), seen: map[string]seenJob{}}
}

// seenJob is the stream sequence of a job's newest message and of the end
// of its latest ended attempt (0: none yet) as the tail read them, and when.
type seenJob struct {
	last, end  uint64
	endAttempt int
	at         time.Time
	// trust is what the tail learned of the job's writers.
	trust *trust
}

// seenFor is what the tail has read of job.
func (h *Hub) seenFor(job string) seenJob {
	h.seenMu.Lock()
	defer h.seenMu.Unlock()
	return h.seen[job]
}

// forget drops ended jobs after a minute and silent ones after an hour;
// their replays fall back to asking the stream alone.
func (h *Hub) forget(now time.Time) {
	h.seenMu.Lock()
	defer h.seenMu.Unlock()
	for job, s := range h.seen {
		if (s.end > 0 && now.Sub(s.at) > time.Minute) || now.Sub(s.at) > time.Hour {
			delete(h.seen, job)
		}
	}
}

// Ready is closed once the tail is consuming; no client may start before,
// or a message stored between its replay and the tail could be missed.
func (h *Hub) Ready() <-chan struct{} { return h.ready }

// Run tails all narration from now on until ctx ends. The ordered consumer
// recreates itself after a reconnect from the last sequence it delivered,
// so the tail has no gaps. A watchdog restarts it from there too when the
// stream holds newer messages and the tail has not moved for two checks:
// after a NATS server dies, the consumer's own recovery can stall. A check
// the stream did not answer counts as one: the tail did not move through
// it, and its clients wait on the restart.
func (h *Hub) Run(ctx context.Context) error {
	for {
		last, err := h.narr.LastSeq(ctx)
		if err == nil {
			h.tail.Store(last)
			break
		}
		h.log.Warn("open live tail", "err", err)
		if !sleepCtx(ctx, time.Second) {
			return nil
		}
	}
	cc, err := h.consume(ctx)
	for err != nil {
		h.log.Warn("create live tail", "err", err)
		if !sleepCtx(ctx, time.Second) {
			return nil
		}
		cc, err = h.consume(ctx)
	}
	close(h.ready)
	prune := time.NewTicker(30 * time.Second)
	defer prune.Stop()
	watch := time.NewTicker(tailCheck)
	defer watch.Stop()
	var seenAt uint64
	stalls := 0
	for {
		select {
		case <-ctx.Done():
			if cc != nil {
				cc.Stop()
			}
			return nil
		case now := <-prune.C:
			h.forget(now)
		case <-watch.C:
			last, err := h.narr.LastSeq(ctx)
			if err != nil {
				stalls = max(stalls, 1)
				continue
			}
			at := h.tail.Load()
			if last > at && at == seenAt {
				stalls++
			} else {
				stalls = 0
			}
			seenAt = at
			if stalls < 2 && cc != nil {
				continue
			}
			h.log.Warn("live tail stalled; restarting it", "at", at, "stream_last", last)
			if cc != nil {
				cc.Stop()
			}
			if cc, err = h.consume(ctx); err != nil {
				h.log.Warn("restart live tail", "err", err)
			}
			stalls = 0
		}
	}
}

// tailCheck is how often the watchdog compares the tail with the stream.
const tailCheck = 2 * time.Second

// consume starts an ordered consumer of all narration after the tail.
func (h *Hub) consume(ctx context.Context) (jetstream.ConsumeContext, error) {
	cons, err := h.narr.Follow(ctx, bus.NarrAll, h.tail.Load()+1, 30*time.Second)
	if err != nil {
		return nil, err
	}
	cc, err := cons.Consume(h.deliver, jetstream.PullMaxMessages(2048), jetstream.PullExpiry(store.PullExpiry), jetstream.PullHeartbeat(store.PullHeartbeat))
	if err != nil {
		return nil, fmt.Errorf("consume live tail: %w", err)
	}
	return cc, nil
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

func (h *Hub) deliver(m jetstream.Msg) {
	job, writer, kind, ok := bus.ParseNarr(m.Subject())
	if !ok {
		return
	}
	md, err := m.Metadata()
	if err != nil {
		return
	}
	seq := md.Sequence.Stream
	// The tail moves forward only: after a restart, what the stopped
	// consumer still hands over was delivered already.
	for {
		at := h.tail.Load()
		if seq <= at {
			return
		}
		if h.tail.CompareAndSwap(at, seq) {
			break
		}
	}
	h.mu.RLock()
	watched := len(h.subs[job]) > 0
	h.mu.RUnlock()
	f := &Frame{Seq: seq, Writer: writer, Kind: kind, Data: m.Data(), Attempt: bus.EndAttempt(m.Subject()), Header: m.Headers()}
	// Frames of jobs no client follows are decoded only when they teach
	// something (the queen's) or could close a resuming client (ends).
	judge := watched || writer == bus.QueenWriter || kind == bus.KindEnd
	reject := ""
	// Recorded before the fan-out: a client subscribing meanwhile either
	// gets this frame live or sees it in seen and replays it.
	h.seenMu.Lock()
	sj := h.seen[job]
	sj.last, sj.at = seq, time.Now()
	if judge {
		if sj.trust == nil {
			sj.trust = &trust{}
		}
		reject = sj.trust.judge(job, f, h.Records)
		f.judged = reject == ""
	}
	if kind == bus.KindEnd && reject == "" && f.Attempt > sj.endAttempt {
		sj.end, sj.endAttempt = seq, f.Attempt
	}
	h.seen[job] = sj
	h.seenMu.Unlock()
	if reject != "" {
		if h.Rejected != nil {
			h.Rejected(reject)
		}
		return
	}

	// Subscribed after the look above, a client gets the frame unjudged,
	// and its fence judges it.
	h.mu.RLock()
	subs := h.subs[job]
	if len(subs) == 0 {
		h.mu.RUnlock()
		return
	}
	var full []*sub
	for s := range subs {
		select {
		case s.ch <- f:
			h.relayed.Add(1)
		default:
			full = append(full, s)
		}
	}
	h.mu.RUnlock()
	for _, s := range full {
		h.drop(s)
	}
}

// firstBuffer is the live buffer a client starts with. Most clients idle
// or follow a slow job, and 10,000 of them should not each hold the full
// buffer; a client that overflows it catches up from the stream and comes
// back with the full one.
const firstBuffer = 64

// subscribe registers a live feed for job, buffering the hub's full
// buffer of frames when full is set, firstBuffer otherwise.
func (h *Hub) subscribe(job string, full bool) *sub {
	n := h.buffer
	if !full {
		n = min(n, firstBuffer)
	}
	s := &sub{job: job, ch: make(chan *Frame, n)}
	h.mu.Lock()
	m := h.subs[job]
	if m == nil {
		m = map[*sub]struct{}{}
		h.subs[job] = m
	}
	m[s] = struct{}{}
	h.mu.Unlock()
	return s
}

// unsubscribe removes a feed; it is safe to call after drop.
func (h *Hub) unsubscribe(s *sub) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if m := h.subs[s.job]; m != nil {
		delete(m, s)
		if len(m) == 0 {
			delete(h.subs, s.job)
		}
	}
}

// drop closes a feed that fell behind; its client resumes from the stream.
func (h *Hub) drop(s *sub) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if m := h.subs[s.job]; m != nil {
		if _, ok := m[s]; ok {
			delete(m, s)
			if len(m) == 0 {
				delete(h.subs, s.job)
			}
			h.overflows++
			close(s.ch)
		}
	}
}

// Overflows is how many feeds were closed because a client fell behind.
func (h *Hub) Overflows() uint64 {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.overflows
}

// Relayed is how many frames the live tail handed to clients.
func (h *Hub) Relayed() uint64 { return h.relayed.Load() }

// Clients is the number of live feeds.
func (h *Hub) Clients() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	n := 0
	for _, m := range h.subs {
		n += len(m)
	}
	return n
}
