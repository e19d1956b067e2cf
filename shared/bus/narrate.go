package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrAlreadyEnded means another writer stored the job's end event first.
var ErrAlreadyEnded = errors.New("job already ended")

// ErrBudgetExceeded means the job's narration reached its byte budget: the
// event was not stored, and no later one will be but the end.
var ErrBudgetExceeded = errors.New("narration budget exceeded")

// errCodeStoreFailed is JetStream refusing to store a message, among
// others because a DiscardNew stream is full.
const errCodeStoreFailed jetstream.ErrorCode = 10077

// full reports whether err is the stream refusing a message for a limit
// (bytes, messages, messages per subject): sending it again cannot help.
func full(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeStoreFailed && strings.Contains(apiErr.Description, "maximum")
}

// LostRace reports whether err is JetStream refusing a write because the
// expected last sequence did not match: single-node and replicated streams
// use different codes for it.
func LostRace(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// Encode makes an event's body once the publisher has given it its job
// sequence; the body must carry that sequence.
type Encode func(seq uint64) ([]byte, error)

// Publisher narrates one job for one writer. It is safe for concurrent use:
// a command's stdout and stderr readers share one.
//
// Events are published asynchronously, with a bounded number in flight, and
// must be stored in order with none missing, even when a NATS node dies
// mid-job. Messages on one connection reach the server in order, so what a
// broken connection stored is a prefix of what was sent. When a publish
// fails or the connection is replaced, the publisher stops, asks the stream
// for the newest event it stored, and sends the rest again in order. The
// connection must not buffer publishes while reconnecting
// (nats.ReconnectBufSize(-1), see HiveOptions), or buffered events could
// land after a gap.
//
// The publisher knows nothing of what an event says: the caller encodes
// each body for the sequence it is given. Every frame carries its job
// sequence, attempt, writer and kind as headers (Meta).
type Publisher struct {
	js      jetstream.JetStream
	nc      *nats.Conn
	job     string
	writer  string
	attempt int

	// budget bounds the bytes (subject and body) of the job's events,
	// the end aside; 0 is none. overBudget is told once when an event
	// would pass it.
	budget     int64
	overBudget func()

	mu     sync.Mutex
	seq    uint64
	bytes  int64
	spent  bool      // the budget is used up
	window []pending // sent, maybe not yet stored, in order
	broken bool      // a publish failed: resync before the next
	gen    uint64    // the connection's reconnect count at the last sync
	failed error
	// closed is set once no more events are taken (Finish, or a start
	// that found the job ended); finished holds what settling said.
	closed   bool
	finished error
	ended    bool

	futures  chan future
	inflight atomic.Int64
	// progress is when the last acknowledgement or failure came in, or
	// the first publish after none was in flight (unix nanoseconds).
	progress atomic.Int64
	acked    atomic.Uint64 // highest sequence acknowledged
	errored  atomic.Bool
	// refused is the stream's answer when it is full: every later event
	// would be refused too, so the publisher stops.
	refused atomic.Pointer[error]
	// settled is poked whenever an acknowledgement or failure comes in,
	// for Finish waiting for the last of them.
	settled chan struct{}
	done    chan struct{}
}

type pending struct {
	seq uint64
	msg *nats.Msg
}

type future struct {
	seq uint64
	f   jetstream.PubAckFuture
}

// NewPublisher starts a publisher of writer's narration of attempt of job,
// whose first event gets sequence nextSeq.
func NewPublisher(js jetstream.JetStream, job, writer string, attempt int, nextSeq uint64) *Publisher {
	p := &Publisher{
		js: js, nc: js.Conn(), job: job, writer: writer, attempt: max(attempt, 1),
		seq:     nextSeq,
		futures: make(chan future, 1024),
		settled: make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
	p.gen = p.nc.Stats().Reconnects
	go p.collect()
	return p
}

// SetBudget bounds the bytes the job's events may store, the end aside,
// and names what to call once, under the publisher's lock, when an event
// would pass it: the caller stops the job's work there. An event that does
// not fit is not stored, so the job stores at most budget bytes before
// its end. Call it before the first event.
func (p *Publisher) SetBudget(budget int64, exceeded func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.budget, p.overBudget = budget, exceeded
}

// spend counts n bytes against the budget, or reports that they do not fit.
func (p *Publisher) spend(n int) error {
	if p.budget <= 0 {
		return nil
	}
	if p.spent || p.bytes+int64(n) > p.budget {
		if !p.spent {
			p.spent = true
			if p.overBudget != nil {
				p.overBudget()
			}
		}
		return ErrBudgetExceeded
	}
	p.bytes += int64(n)
	return nil
}

// collect follows the acknowledgements in publish order.
func (p *Publisher) collect() {
	defer close(p.done)
	for fu := range p.futures {
		select {
		case <-fu.f.Ok():
			// After a failure, a later event's acknowledgement says
			// nothing about the failed one: resync decides.
			if !p.errored.Load() {
				p.acked.Store(fu.seq)
			}
		case err := <-fu.f.Err():
			if full(err) {
				p.refused.CompareAndSwap(nil, &err)
			}
			p.errored.Store(true)
		}
		p.progress.Store(time.Now().UnixNano())
		p.inflight.Add(-1)
		select {
		case p.settled <- struct{}{}:
		default:
		}
	}
}

// send publishes the newest window entry, first resynchronising if a
// publish failed or the connection changed since the last one.
func (p *Publisher) send() error {
	if p.failed != nil || p.checkRefused() {
		return p.failed
	}
	if p.stalled() {
		p.drain()
	}
	if p.broken || p.errored.Load() || p.nc.Stats().Reconnects != p.gen {
		return p.resync()
	}
	p.trim()
	p.publish(p.window[len(p.window)-1])
	return nil
}

// stallAfter is how long publishes may go unanswered before the publisher
// stops sending more. A stream whose leader died answers nothing until a
// new one is elected, which takes seconds; events sent meanwhile would
// be stored by the new leader before the lost ones are sent again, out of
// order. Acknowledgements normally take milliseconds.
const stallAfter = time.Second

// stalled reports whether publishes are in flight with no answer for
// stallAfter.
func (p *Publisher) stalled() bool {
	return p.inflight.Load() > 0 && time.Since(time.Unix(0, p.progress.Load())) > stallAfter
}

// drain waits until every publish in flight is answered or timed out.
func (p *Publisher) drain() {
	for p.inflight.Load() > 0 {
		select {
		case <-p.settled:
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (p *Publisher) publish(pd pending) {
	f, err := p.js.PublishMsgAsync(pd.msg)
	if err != nil {
		p.broken = true
		return
	}
	if p.inflight.Add(1) == 1 {
		p.progress.Store(time.Now().UnixNano())
	}
	p.futures <- future{seq: pd.seq, f: f}
}

// checkRefused fails the publisher once the stream refused an event for a
// limit, and reports whether it did.
func (p *Publisher) checkRefused() bool {
	if err := p.refused.Load(); err != nil && p.failed == nil {
		p.failed = fmt.Errorf("narration refused by NATS: %w", *err)
	}
	return p.failed != nil
}

// trim forgets window entries already acknowledged.
func (p *Publisher) trim() {
	acked := p.acked.Load()
	i := 0
	for i < len(p.window) && p.window[i].seq <= acked {
		i++
	}
	p.window = p.window[i:]
}

// resync waits for the connection and for every outstanding publish to
// settle, learns the newest event the stream holds from this writer, and
// sends everything after it again, in order.
func (p *Publisher) resync() error {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		for !p.nc.IsConnected() || p.inflight.Load() > 0 {
			if time.Now().After(deadline) {
				p.failed = fmt.Errorf("narration stalled: NATS unavailable for 2 minutes")
				return p.failed
			}
			time.Sleep(5 * time.Millisecond)
		}
		gen := p.nc.Stats().Reconnects
		last, err := p.lastStored()
		if err != nil {
			if time.Now().After(deadline) {
				p.failed = fmt.Errorf("narration stalled: %w", err)
				return p.failed
			}
			time.Sleep(100 * time.Millisecond)
			continue
		}
		p.acked.Store(max(p.acked.Load(), last))
		p.trim()
		p.errored.Store(false)
		p.broken, p.gen = false, gen
		// The first unstored event goes alone and waits for its
		// acknowledgement, which comes once the stream has a leader that
		// stored it. A batch sent while the stream elects a leader would
		// fail at once, and one sent as the leader is elected could be
		// stored in part, its tail before its head: a gap no reader could
		// close. The direct get above may be answered by any replica, so
		// it proves nothing about the leader.
		if len(p.window) > 0 {
			if err := p.publishSync(p.window[0]); err != nil {
				if p.checkRefused() {
					return p.failed
				}
				if time.Now().After(deadline) {
					p.failed = fmt.Errorf("narration stalled: %w", err)
					return p.failed
				}
				time.Sleep(100 * time.Millisecond)
				continue
			}
			p.acked.Store(max(p.acked.Load(), p.window[0].seq))
			p.trim()
		}
		for _, pd := range p.window {
			p.publish(pd)
			if p.broken {
				break
			}
		}
		if !p.broken {
			return nil
		}
	}
}

// publishSync stores one event and waits for the stream's acknowledgement.
func (p *Publisher) publishSync(pd pending) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := p.js.PublishMsg(ctx, pd.msg)
	if full(err) {
		p.refused.CompareAndSwap(nil, &err)
	}
	return err
}

// lastStored is the sequence of this writer's newest stored event of the
// job, 0 if none.
func (p *Publisher) lastStored() (uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return LastSeq(ctx, p.js.Conn(), p.job, p.writer)
}

// LastSeq is the job sequence of the newest event writer stored for job, 0
// if none. A hive may read its own narration subjects only, with a direct
// get: stream info, which lists every job's subjects, is not the hive's to
// read. The sequence comes from the frame's header; a frame stored without
// one, by an older writer, has it read from its body.
func LastSeq(ctx context.Context, nc *nats.Conn, job, writer string) (uint64, error) {
	m, err := nc.RequestWithContext(ctx, DirectGetLast(NarrStream, NarrJobWriter(job, writer)), nil)
	if err != nil {
		return 0, fmt.Errorf("last event of job %s: %w", job, err)
	}
	switch status := m.Header.Get("Status"); status {
	case "":
	case "404":
		return 0, nil
	default:
		return 0, fmt.Errorf("last event of job %s: status %s %s", job, status, m.Header.Get("Description"))
	}
	if seq, ok := HeaderSeqOf(m.Header); ok {
		return seq, nil
	}
	seq, err := BodySeq(m.Data)
	if err != nil {
		return 0, fmt.Errorf("last event of job %s: %w", job, err)
	}
	return seq, nil
}

// BodySeq reads the job sequence from an event body stored without
// headers.
func BodySeq(data []byte) (uint64, error) {
	var e struct {
		Seq uint64 `json:"seq"`
	}
	err := json.Unmarshal(data, &e)
	return e.Seq, err
}

// settle waits until every sent event is stored.
func (p *Publisher) settle() error {
	for {
		if p.failed != nil || p.checkRefused() {
			return p.failed
		}
		if p.broken || p.errored.Load() || p.nc.Stats().Reconnects != p.gen {
			if err := p.resync(); err != nil {
				return err
			}
			continue
		}
		p.trim()
		if len(p.window) == 0 {
			return nil
		}
		if p.inflight.Load() == 0 {
			// Sent but neither acknowledged nor failed: treat as broken.
			p.broken = true
			continue
		}
		select {
		case <-p.settled:
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Start publishes the event that marks the job running, unless the job
// has ended already (cancelled while queued, say): then it returns
// ErrAlreadyEnded and the work must not begin. The check and the write are
// one step in the server, and need no right to read other narration.
func (p *Publisher) Start(ctx context.Context, enc Encode) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	msg, err := p.startMsg(enc)
	if err != nil {
		return err
	}
	return p.sendStart(ctx, msg)
}

// Begin is Start without waiting for the stream's answer, for work that
// may begin while the start is on its way: it numbers and sends the start
// now, and wait reports what Start would have. Until the answer comes the
// publisher takes nothing else, so every later event, from any goroutine,
// follows the start; after a start that was refused or failed, none is
// stored (Publish returns ErrAlreadyEnded or the failure), and the caller
// stops the work it began. ctx must last until wait returns.
func (p *Publisher) Begin(ctx context.Context, enc Encode) (wait func() error) {
	p.mu.Lock()
	msg, err := p.startMsg(enc)
	if err != nil {
		p.mu.Unlock()
		return func() error { return err }
	}
	res := make(chan error, 1)
	go func() {
		err := p.sendStart(ctx, msg)
		p.mu.Unlock()
		res <- err
	}()
	var once sync.Once
	return func() error {
		once.Do(func() { err = <-res })
		return err
	}
}

// startMsg numbers and encodes the start; the caller holds p.mu.
func (p *Publisher) startMsg(enc Encode) (*nats.Msg, error) {
	if p.closed {
		return nil, ErrAlreadyEnded
	}
	// The sequence is taken even if the write fails: it may have been
	// stored all the same, and the end must not repeat it.
	seq := p.seq
	p.seq++
	data, err := enc(seq)
	if err != nil {
		p.failed = fmt.Errorf("encode start: %w", err)
		return nil, p.failed
	}
	msg := p.meta(KindStart, seq).Msg(data)
	// The start is counted but always fits: a job is refused by its
	// events, never before it begins.
	p.bytes += int64(len(msg.Subject) + len(data))
	return msg, nil
}

// sendStart stores the start unless the job's end is stored; the caller
// holds p.mu. A start that failed fails the publisher: no event may be
// stored after a start that may not have been.
func (p *Publisher) sendStart(ctx context.Context, msg *nats.Msg) error {
	_, err := p.js.PublishMsg(ctx, msg, jetstream.WithExpectLastSequenceForSubject(0, NarrEnd(p.job, p.attempt)))
	if LostRace(err) {
		p.ended, p.closed = true, true
		close(p.futures)
		return ErrAlreadyEnded
	}
	if err != nil {
		p.failed = fmt.Errorf("publish start: %w", err)
		return p.failed
	}
	return nil
}

func (p *Publisher) meta(kind string, seq uint64) Meta {
	return Meta{Job: p.job, Writer: p.writer, Kind: kind, Seq: seq, Attempt: p.attempt}
}

// Publish sends one event of kind (KindEvent or KindData). It blocks while
// too many publishes are unacknowledged, which is the backpressure a fast
// producer needs. An event past the budget is not stored and gives its
// sequence back: the stream holds 1..n without a gap, and the end comes
// next.
func (p *Publisher) Publish(kind string, enc Encode) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrAlreadyEnded
	}
	if p.spent {
		return ErrBudgetExceeded
	}
	if p.failed != nil {
		return p.failed
	}
	data, err := enc(p.seq)
	if err != nil {
		return fmt.Errorf("encode event: %w", err)
	}
	msg := p.meta(kind, p.seq).Msg(data)
	if err := p.spend(len(msg.Subject) + len(data)); err != nil {
		return err
	}
	p.window = append(p.window, pending{seq: p.seq, msg: msg})
	p.seq++
	return p.send()
}

// Finish stops taking events and waits until every one sent is stored. It
// returns why they could not all be, or ErrAlreadyEnded when the job's end
// is stored already; calling it again returns the same.
func (p *Publisher) Finish() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.finishLocked()
}

func (p *Publisher) finishLocked() error {
	if p.ended {
		return ErrAlreadyEnded
	}
	if p.closed {
		return p.finished
	}
	p.closed = true
	p.finished = p.settle()
	close(p.futures)
	<-p.done
	return p.finished
}

// End finishes (see Finish) and stores the job's one end event for the
// publisher's attempt, numbered after the last event. If another writer
// ended the attempt first it returns ErrAlreadyEnded.
func (p *Publisher) End(ctx context.Context, enc Encode) error {
	p.mu.Lock()
	if err := p.finishLocked(); errors.Is(err, ErrAlreadyEnded) {
		p.mu.Unlock()
		return err
	}
	p.ended = true
	m := p.meta(KindEnd, p.seq)
	p.seq++
	p.mu.Unlock()
	data, err := enc(m.Seq)
	if err != nil {
		return fmt.Errorf("encode end: %w", err)
	}
	return PublishEnd(ctx, p.js, m, data)
}

// PublishEnd stores data as the end event of m's attempt unless one is
// stored already. The check and the write are one atomic step in the
// server, so racing writers (a hive finishing, a queen cancelling) store
// exactly one end.
func PublishEnd(ctx context.Context, js jetstream.JetStream, m Meta, data []byte) error {
	m.Kind = KindEnd
	_, err := js.PublishMsg(ctx, m.Msg(data), jetstream.WithExpectLastSequenceForSubject(0, NarrEnd(m.Job, m.Attempt)))
	if LostRace(err) {
		return ErrAlreadyEnded
	}
	if err != nil {
		return fmt.Errorf("publish end of job %s: %w", m.Job, err)
	}
	return nil
}
