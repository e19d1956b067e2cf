package agent

import (
	"testing"
	"time"
)

// Of four idle loops three rest and one keeps pulling; a message wakes
// them all.
func TestPullGateKeepsOneRequestOut(t *testing.T) {
	g := newPullGate(4)
	var waits []<-chan struct{}
	for range 3 {
		w := g.rest()
		if w == nil {
			t.Fatal("a loop did not rest while another was pulling")
		}
		waits = append(waits, w)
	}
	if g.rest() != nil {
		t.Fatal("the last pulling loop rested")
	}
	g.got()
	for i, w := range waits {
		select {
		case <-w:
		default:
			t.Fatalf("resting loop %d not woken by a message", i)
		}
	}
	if g.rest() == nil {
		t.Fatal("after a wake, an idle loop did not rest again")
	}
	if newPullGate(1).rest() != nil {
		t.Fatal("a hive's only loop rested")
	}
}

// A steady hive beats at half the TTL, a busy one at a third, and a failed
// beat is tried again after a tenth.
func TestBeatInterval(t *testing.T) {
	ttl := 15 * time.Second
	for _, c := range []struct {
		idle, failures int
		want           time.Duration
	}{
		{0, 0, 5 * time.Second},
		{1, 0, 5 * time.Second},
		{2, 0, 7500 * time.Millisecond},
		{5, 1, 1500 * time.Millisecond},
		{0, 2, 1500 * time.Millisecond},
	} {
		if got := beatInterval(ttl, c.idle, c.failures); got != c.want {
			t.Errorf("beatInterval(%s, idle %d, failures %d) = %s, want %s", ttl, c.idle, c.failures, got, c.want)
		}
	}
	if got := beatInterval(200*time.Millisecond, 0, 1); got != 100*time.Millisecond {
		t.Errorf("a tiny TTL's beat = %s, want the 100ms floor", got)
	}
}
