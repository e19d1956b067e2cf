package bench_test

import (
	"math"
	"slices"
	"testing"
	"time"

	"rbee.dev/queen/internal/bench"
)

func TestJain(t *testing.T) {
	for _, c := range []struct {
		xs   []float64
		want float64
	}{
		{[]float64{5, 5}, 1},
		{[]float64{1, 0}, 0.5},
		{[]float64{3, 1}, 0.8}, // 16 / (2·10)
		{[]float64{2, 2, 2, 0}, 0.75},
		{[]float64{0, 0}, 0},
		{nil, 0},
	} {
		if got := bench.Jain(c.xs); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("Jain(%v) = %v, want %v", c.xs, got, c.want)
		}
	}
}

func TestHandoffs(t *testing.T) {
	t0 := time.Now()
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	spans := []bench.Span{
		// Given out of order: Handoffs orders by first token.
		{Sent: at(0), First: at(110), Last: at(190)},   // waited for the first: 10 ms
		{Sent: at(0), First: at(10), Last: at(100)},    // the first
		{Sent: at(300), First: at(310), Last: at(400)}, // sent after the slot freed: not a handoff
		{Sent: at(350), First: at(395), Last: at(480)}, // first token before the previous end: an overlap
		{Sent: at(360), First: at(500), Last: at(590)}, // 20 ms after the previous end
	}
	gaps, overlaps := bench.Handoffs(spans)
	if want := []time.Duration{10 * time.Millisecond, 20 * time.Millisecond}; !slices.Equal(gaps, want) || overlaps != 1 {
		t.Errorf("Handoffs = %v, %d overlaps; want %v, 1", gaps, overlaps, want)
	}
}
