package agent

import "sync"

// pullGate lets the pull loops of an idle hive keep one pull request out
// between them instead of one each. A loop whose pull ended empty rests
// until a message arrives for any loop; the last loop not resting never
// rests, so the hive always has a request out. With a thousand hives of
// four slots each that is 200 pull requests a second at idle instead of
// 800, and a burst costs one round trip before the other loops pull too.
type pullGate struct {
	mu      sync.Mutex
	loops   int // pull loops in all
	resting int
	wake    chan struct{} // closed when a message arrives for a loop
}

func newPullGate(loops int) *pullGate {
	return &pullGate{loops: loops, wake: make(chan struct{})}
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
