package agent

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// pullWait is how long one pull request waits for a dispatch. Long, so
// an idle hive asks rarely; the server's heartbeats (bus.NextDispatch)
// and a fresh pull after each reconnect (pullGate.follow) keep a request
// the server lost from leaving the hive deaf for that long.
const pullWait = 30 * time.Second

// pullGate lets the pull loops of an idle hive keep one pull request out
// between them instead of one each. A loop whose pull ended empty rests
// until a message arrives for any loop; the last loop not resting never
// rests, so the hive always has a request out. With a thousand hives of
// four slots each, and each request waiting pullWait, that is 33 pull
// requests a second at idle instead of 800 (one per slot every 5 s, as it
// was), and a burst costs one round trip before the other loops pull too.
type pullGate struct {
	mu sync.Mutex
	// ctx ends the pulls out when the connection comes back: what the
	// server held for the old one may be gone.
	ctx     context.Context
	cancel  context.CancelFunc
	loops   int // pull loops in all
	resting int
	wake    chan struct{} // closed when a message arrives for a loop
}

func newPullGate(loops int) *pullGate {
	ctx, cancel := context.WithCancel(context.Background())
	return &pullGate{loops: loops, wake: make(chan struct{}), ctx: ctx, cancel: cancel}
}

// pull is the context one pull request waits under: ctx for at most
// pullWait, ended early when the connection comes back.
func (g *pullGate) pull(ctx context.Context) (context.Context, context.CancelFunc) {
	g.mu.Lock()
	gen := g.ctx
	g.mu.Unlock()
	pctx, cancel := context.WithTimeout(ctx, pullWait)
	stop := context.AfterFunc(gen, cancel)
	return pctx, func() { stop(); cancel() }
}

// follow ends the pulls out each time nc reconnects, until ctx ends; the
// loops then pull again at once. A server that restarted may have
// forgotten the requests; its missing heartbeats would tell the hive so
// only after two PullHeartbeats.
func (g *pullGate) follow(ctx context.Context, nc *nats.Conn) {
	ch := nc.StatusChanged(nats.CONNECTED)
	defer nc.RemoveStatusListener(ch)
	for {
		select {
		case <-ctx.Done():
			return
		case <-ch:
			g.mu.Lock()
			g.cancel()
			g.ctx, g.cancel = context.WithCancel(context.Background())
			g.mu.Unlock()
		}
	}
}

// rest is called by a loop whose pull ended without a message. It returns
// a channel to wait on before pulling again, or nil to pull again at once.
func (g *pullGate) rest() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.resting+1 >= g.loops {
		return nil
	}
	g.resting++
	return g.wake
}

// got is called by a loop that received a message: every resting loop
// pulls again.
func (g *pullGate) got() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.resting == 0 {
		return
	}
	close(g.wake)
	g.wake = make(chan struct{})
	g.resting = 0
}
