// Package relay carries narration from JetStream to SSE clients. A queen
// follows live only the jobs its clients follow: the narration stream
// republishes each message once stored (bus.LiveJob), the queen subscribes
// to a job's subject while the job has a client, and fans each frame out in
// memory to the job's clients. So a queen reads each followed job's
// narration once, and nothing of the jobs it does not serve, however many
// queens there are. History for late or resuming clients is read one
// message at a time, and a long one with a short-lived ordered consumer.
// A client costs a few kilobytes, not a server-side consumer.
package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"rbee.dev/queen/internal/metrics"
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

	// decoded is set once c and reject hold what the frame claims, which
	// the hub reads once for every client of the job.
	decoded bool
	reject  string
	c       claims
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

// Hub is the queen's live feed of the jobs its clients follow, and their
// subscribers.
type Hub struct {
	narr   *store.NarrationReader
	log    *slog.Logger
	buffer int

	mu    sync.RWMutex
	feeds map[string]*feed
	ready chan struct{}
	// expecting counts the feeds Expect made that no client came to yet.
	expecting int

	// seen is what the live feed has read of each recent job. A replay
	// reads history at least that far: on a NATS cluster a history read may
	// be answered by a replica that lags behind the feed, and stopping where
	// it stops would leave a gap before the live frames.
	seenMu sync.Mutex
	seen   map[string]seenJob

	// overflows counts feeds closed because their client fell behind.
	overflows uint64
	relayed   atomic.Uint64

	// Records finds job records for frames whose attempt's hive the hub
	// did not read from the queen's events; set before Run.
	Records Records
	// Rejected counts a frame the live feed refused, by reason; set before
	// Run, or nil.
	Rejected func(reason string)
}

// feed is one followed job: its NATS subscription and its clients.
type feed struct {
	subs map[*sub]struct{}
	// ready is closed once ns (or err) is set.
	ready chan struct{}
	ns    *nats.Subscription
	err   error
	// last is the newest stream sequence the job's clients are known to
	// have reached, live or by a replay; heard is when a frame last came.
	// A job silent for a while is asked for its newest message: a frame
	// the republish never sent (its stream leader died between storing
	// and sending it) must not leave a client waiting.
	last      uint64
	heard     time.Time
	checkWait time.Duration
	// linger, while the job has no client, ends the subscription unless a
	// client comes back first: clients that go back to history and return
	// keep the one subscription.
	linger *time.Timer
	// opening is every frame of the job from its first on, while the queen
	// has followed it from before its first was stored (Expect) and none
	// was left to history or missed; a client that comes meanwhile reads
	// them from here instead of asking the stream for each. nil otherwise.
	// openingBytes is the size of their bodies and headers.
	opening      []*Frame
	openingBytes int
	// expected: Expect made the feed, and no client came to it yet;
	// opened: a client took its opening, and reads no history.
	expected, opened bool
}

// openingMax and openingMaxBytes bound what a feed keeps of a job's
// opening: jobs nobody follows are kept expectFor each, and a client that
// comes later reads history.
const (
	openingMax      = firstBuffer
	openingMaxBytes = 32 << 10
)

// expectFor is how long the queen follows a job it created for a client
// that does not come (Expect): the one that created it follows it within
// moments, if at all. At most expectMax jobs wait so for their first
// client (a subscription and its goroutine each); jobs created past that,
// in a burst nobody follows, are not followed ahead.
const (
	expectFor = 2 * time.Second
	expectMax = 256
)

// lingerFor is how long a job's subscription outlives its last client.
const lingerFor = 5 * time.Second

// NewHub makes a hub that reads narr and whose clients buffer up to
// buffer frames.
func NewHub(narr *store.NarrationReader, log *slog.Logger, buffer int) *Hub {
	if buffer <= 0 {
		buffer = 4096
	}
	return &Hub{narr: narr, log: log.With("component", "relay"), buffer: buffer,
		feeds: map[string]*feed{}, ready: make(chan struct{}), seen: map[string]seenJob{}}
}

// seenJob is the stream sequence of a job's newest message and of the end
// of its latest ended attempt (0: none yet) as the live feed read them, and when.
type seenJob struct {
	last, end  uint64
	endAttempt int
	at         time.Time
	// trust is what the live feed learned of the job's writers.
	trust *trust
}

// seenFor is what the live feed has read of job.
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

// Ready is closed once the hub runs; no client starts before.
func (h *Hub) Ready() <-chan struct{} { return h.ready }

// Run fans out the followed jobs' frames until ctx ends. A core
// subscription misses what is published while its connection is away,
// what NATS drops for a slow reader, and a frame its stream's leader
// stored but died before sending on: after a reconnect every client is
// sent back to history from where it stands; a client that sees a gap in
// its job's sequence goes back by itself (fenced.send); and a job that has
// been silent a while is asked for its newest frame, and its clients sent
// back to history when the feed missed it.
func (h *Hub) Run(ctx context.Context) error {
	close(h.ready)
	prune := time.NewTicker(30 * time.Second)
	defer prune.Stop()
	check := time.NewTicker(checkFirst)
	defer check.Stop()
	reconnects := h.narr.Reconnects()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-prune.C:
			h.forget(now)
		case now := <-check.C:
			if n := h.narr.Reconnects(); n != reconnects {
				reconnects = n
				h.log.Info("NATS reconnected; live clients catch up from history")
				h.closeFeeds("")
			}
			h.checkSilent(ctx, now)
		}
	}
}

// A silent job is first asked for its newest frame checkFirst after its
// last one, then twice as long each time up to checkMax; at most
// checksPerTick jobs are asked each checkFirst.
const (
	checkFirst    = 250 * time.Millisecond
	checkMax      = 8 * time.Second
	checksPerTick = 256
	checkTimeout  = 2 * time.Second
)

// checkSilent asks the stream for the newest frame of each job silent for
// its check wait, and sends back to history the clients of a job whose
// feed missed one. A job none of whose clients has caught up yet is not
// asked: its clients are still reading history, which ends at least where
// the feed begins; one whose client took its opening reads none, and is.
func (h *Hub) checkSilent(ctx context.Context, now time.Time) {
	var due []string
	h.mu.RLock()
	for job, f := range h.feeds {
		if f.ns == nil || len(f.subs) == 0 || (f.last == 0 && !f.opened) || now.Sub(f.heard) < f.checkWait {
			continue
		}
		if n, _, err := f.ns.Pending(); err == nil && n > 0 {
			// Frames are on their way: the job is not silent.
			continue
		}
		if due = append(due, job); len(due) == checksPerTick {
			break
		}
	}
	h.mu.RUnlock()
	deadline := time.Now().Add(checkFirst)
	for _, job := range due {
		if time.Now().After(deadline) {
			// The rest wait for the next tick, which also watches for
			// reconnects.
			return
		}
		cctx, cancel := context.WithTimeout(ctx, checkTimeout)
		m, err := h.narr.Last(cctx, bus.NarrJob(job))
		cancel()
		if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		h.mu.Lock()
		f := h.feeds[job]
		missed := false
		if f != nil {
			f.heard, f.checkWait = now, min(2*f.checkWait, checkMax)
			missed = err == nil && m.Sequence > f.last
		}
		h.mu.Unlock()
		if missed {
			h.log.Debug("live feed missed a frame; its clients catch up from history", "job_id", job, "seq", m.Sequence)
			h.closeFeeds(job)
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// liveSeq is the stream sequence the server gave a republished message:
// the one Nats-Sequence header, which the server appends after the
// writer's headers. A writer that sets one itself makes two (the frame is
// refused), or, with a blank line that hides the server's, one of its own
// making: so a hive's frame goes live only for the job it is writing now,
// whose clients it may stall anyway, and never moves a reader's place in
// any other job's story (Hub.deliver).
func liveSeq(h nats.Header) (uint64, bool) {
	v := h.Values(jetstream.SequenceHeader)
	if len(v) != 1 {
		return 0, false
	}
	seq, err := strconv.ParseUint(v[0], 10, 64)
	return seq, err == nil && seq > 0
}

// deliver fans a republished frame of job out to the job's clients. The
// subject is the server's (the stream's transform of the stored one); the
// sequence is a header (liveSeq). A hive's frame goes live only from the
// hive of the job's current attempt, as the job's record says; any other
// one, a frame of an earlier attempt still in flight, say, is left to
// history, which reads sequences from the stream itself: the next frame's
// gap or the silent job's check sends the clients there.
func (h *Hub) deliver(job string, m *nats.Msg) {
	subj, ok := bus.FromLive(m.Subject)
	if !ok {
		return
	}
	j, writer, kind, ok := bus.ParseNarr(subj)
	if !ok || j != job {
		return
	}
	seq, ok := liveSeq(m.Header)
	if !ok {
		h.reject(metrics.RejectInvalid)
		h.breakOpening(job)
		return
	}
	f := &Frame{Seq: seq, Writer: writer, Kind: kind, Data: m.Data, Attempt: bus.EndAttempt(subj), Header: m.Header}
	if writer != bus.QueenWriter {
		f.decode(job)
		var rec api.Job
		known := false
		if h.Records != nil {
			rec, known = h.Records.Job(job)
		}
		if f.reject == "" && (!known || rec.Hive != writer || rec.Attempt != f.c.attempt) {
			h.breakOpening(job)
			return
		}
	}
	// Recorded before the fan-out: a client subscribing meanwhile either
	// gets this frame live or sees it in seen and replays it.
	h.seenMu.Lock()
	sj := h.seen[job]
	if sj.trust == nil {
		sj.trust = &trust{}
	}
	// The hub refuses what it knows to be wrong, but it learned the job
	// only from when it began to follow it (and from its first client's
	// history, caughtUp): each client's fence, which read the job's story
	// from where the client stands, judges what the hub lets through.
	reject := sj.trust.judge(job, f, h.Records)
	if reject == "" {
		sj.last, sj.at = max(sj.last, seq), time.Now()
		if kind == bus.KindEnd && f.Attempt > sj.endAttempt {
			sj.end, sj.endAttempt = seq, f.Attempt
		}
		h.seen[job] = sj
	}
	h.seenMu.Unlock()
	if reject != "" {
		h.reject(reject)
		return
	}

	h.mu.Lock()
	fd := h.feeds[job]
	if fd == nil {
		h.mu.Unlock()
		return
	}
	fd.last, fd.heard, fd.checkWait = max(fd.last, seq), time.Now(), checkFirst
	if fd.opening != nil {
		if fd.openingBytes += frameBytes(m); len(fd.opening) < openingMax && fd.openingBytes <= openingMaxBytes {
			fd.opening = append(fd.opening, f)
		} else {
			fd.opening = nil
		}
	}
	var full []*sub
	for s := range fd.subs {
		select {
		case s.ch <- f:
			h.relayed.Add(1)
		default:
			full = append(full, s)
		}
	}
	h.mu.Unlock()
	for _, s := range full {
		h.drop(s, true)
	}
}

// frameBytes is about what a frame kept in an opening holds: its body and
// headers, which a hive writes too.
func frameBytes(m *nats.Msg) int {
	n := len(m.Data)
	for k, vs := range m.Header {
		for _, v := range vs {
			n += len(k) + len(v)
		}
	}
	return n
}

// breakOpening marks job's opening as not whole: a frame of it will not be
// there.
func (h *Hub) breakOpening(job string) {
	h.mu.Lock()
	if f := h.feeds[job]; f != nil {
		f.opening = nil
	}
	h.mu.Unlock()
}

// Expect follows job from before its first frame is stored, so that a
// client that comes soon, the one that created it most likely, reads the
// job's opening from memory, where it would ask the stream for the job's
// newest message and then for each one before it. Unless a client comes,
// the queen stops following the job expectFor later.
func (h *Hub) Expect(job string) {
	h.mu.Lock()
	if h.feeds[job] != nil || h.expecting >= expectMax {
		h.mu.Unlock()
		return
	}
	f := &feed{subs: map[*sub]struct{}{}, ready: make(chan struct{}), heard: time.Now(), checkWait: checkFirst, opening: []*Frame{}, expected: true}
	h.feeds[job] = f
	h.expecting++
	h.mu.Unlock()
	ns, err := h.narr.LiveAhead(job, func(m *nats.Msg) { h.deliver(job, m) })
	h.mu.Lock()
	defer h.mu.Unlock()
	f.ns, f.err = ns, err
	close(f.ready)
	switch {
	case err != nil:
		if h.feeds[job] == f {
			delete(h.feeds, job)
		}
		h.unexpect(f)
	case len(f.subs) == 0:
		f.linger = time.AfterFunc(expectFor, func() { h.end(job, f) })
	}
}

// reject counts a live frame refused for reason.
func (h *Hub) reject(reason string) {
	if h.Rejected != nil {
		h.Rejected(reason)
	}
}

// firstBuffer is the live buffer a client starts with. Most clients idle
// or follow a slow job, and 10,000 of them should not each hold the full
// buffer; a client that overflows it catches up from the stream and comes
// back with the full one.
const firstBuffer = 64

// subscribe registers a live feed for job, buffering the hub's full
// buffer of frames when full is set, firstBuffer otherwise. The job's
// first client subscribes the queen to its frames, and waits for the
// server to hold the subscription; so does every client that comes
// meanwhile. With opening asked for and whole (Expect), the feed starts
// with every frame of the job so far, and subscribe reports true: the
// client has no history to read.
func (h *Hub) subscribe(ctx context.Context, job string, full, opening bool) (*sub, bool, error) {
	n := h.buffer
	if !full {
		n = min(n, firstBuffer)
	}
	s := &sub{job: job, ch: make(chan *Frame, n)}
	h.mu.Lock()
	f := h.feeds[job]
	first := f == nil
	if first {
		f = &feed{subs: map[*sub]struct{}{}, ready: make(chan struct{}), heard: time.Now(), checkWait: checkFirst}
		h.feeds[job] = f
	}
	if f.linger != nil {
		f.linger.Stop()
		f.linger = nil
	}
	f.subs[s] = struct{}{}
	h.unexpect(f)
	opened := opening && f.ns != nil && f.opening != nil && len(f.opening) <= cap(s.ch)
	if opened {
		for _, fr := range f.opening {
			s.ch <- fr
		}
		h.relayed.Add(uint64(len(f.opening)))
		// The client reads no history, so the silent job's check covers
		// it from now on, even before a first frame: one the feed missed
		// must not leave a job that then falls silent waiting.
		f.opened = true
	}
	// The opening is for the client that created the job, which has come;
	// any other reads history.
	f.opening = nil
	h.mu.Unlock()
	if first {
		ns, err := h.narr.Live(job, func(m *nats.Msg) { h.deliver(job, m) })
		h.mu.Lock()
		f.ns, f.err = ns, err
		close(f.ready)
		gone := h.feeds[job] != f
		if err != nil && !gone {
			delete(h.feeds, job)
		}
		h.mu.Unlock()
		if gone && ns != nil {
			_ = ns.Unsubscribe()
		}
	}
	select {
	case <-f.ready:
	case <-ctx.Done():
		h.unsubscribe(s)
		return nil, false, ctx.Err()
	}
	if f.err != nil {
		h.unsubscribe(s)
		return nil, false, fmt.Errorf("follow job %s live: %w", job, f.err)
	}
	return s, opened, nil
}

// caughtUp records that a client of job has read its story up to last,
// and what it learned of the job's writers on the way, which the hub,
// following the job only from when its first client came, did not see.
func (h *Hub) caughtUp(job string, last uint64, t *trust) {
	h.mu.Lock()
	if f := h.feeds[job]; f != nil {
		f.last = max(f.last, last)
	}
	h.mu.Unlock()
	h.seenMu.Lock()
	defer h.seenMu.Unlock()
	sj := h.seen[job]
	if sj.trust == nil {
		sj.trust = &trust{}
	}
	sj.trust.merge(t)
	h.seen[job] = sj
}

// unsubscribe removes a feed; it is safe to call after drop.
func (h *Hub) unsubscribe(s *sub) {
	h.remove(s, false, false)
}

// drop closes a feed that fell behind; its client resumes from the stream.
func (h *Hub) drop(s *sub, overflow bool) {
	h.remove(s, true, overflow)
}

// remove takes s off its job, closing its channel if asked; the queen's
// subscription to the job ends lingerFor after its last client leaves.
func (h *Hub) remove(s *sub, closeCh, overflow bool) {
	h.mu.Lock()
	f := h.feeds[s.job]
	if f == nil {
		h.mu.Unlock()
		return
	}
	if _, ok := f.subs[s]; !ok {
		h.mu.Unlock()
		return
	}
	delete(f.subs, s)
	if closeCh {
		close(s.ch)
		if overflow {
			h.overflows++
		}
	}
	if len(f.subs) == 0 && f.linger == nil {
		f.linger = time.AfterFunc(lingerFor, func() { h.end(s.job, f) })
	}
	h.mu.Unlock()
}

// end drops f, job's feed, if no client came back to it.
func (h *Hub) end(job string, f *feed) {
	h.mu.Lock()
	if h.feeds[job] != f || len(f.subs) > 0 {
		h.mu.Unlock()
		return
	}
	delete(h.feeds, job)
	unfollowed := f.expected
	h.unexpect(f)
	h.mu.Unlock()
	if f.ns != nil {
		_ = f.ns.Unsubscribe()
	}
	if unfollowed {
		// What the queen read of a job nobody came for is kept no longer
		// than its feed: a burst of such jobs must not fill seen for an
		// hour.
		h.seenMu.Lock()
		delete(h.seen, job)
		h.seenMu.Unlock()
	}
}

// unexpect marks f as no longer waiting for its first client; h.mu held.
func (h *Hub) unexpect(f *feed) {
	if f.expected {
		f.expected = false
		h.expecting--
	}
}

// closeFeeds sends every client of job, or of every job when job is "",
// back to history from where it stands.
func (h *Hub) closeFeeds(job string) {
	var subs []*sub
	h.mu.Lock()
	for j, f := range h.feeds {
		if job != "" && j != job {
			continue
		}
		f.opening = nil
		for s := range f.subs {
			subs = append(subs, s)
		}
	}
	h.mu.Unlock()
	for _, s := range subs {
		h.drop(s, false)
	}
}

// Overflows is how many feeds were closed because a client fell behind.
func (h *Hub) Overflows() uint64 {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.overflows
}

// Relayed is how many frames the live feed handed to clients.
func (h *Hub) Relayed() uint64 { return h.relayed.Load() }

// Clients is the number of live feeds.
func (h *Hub) Clients() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	n := 0
	for _, f := range h.feeds {
		n += len(f.subs)
	}
	return n
}
