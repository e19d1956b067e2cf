package refworker

import (
	"context"
	"hash/fnv"
	"strings"
	"time"
)

// vocabulary is every word the reference worker can say.
var vocabulary = strings.Fields(`lorem ipsum dolor sit amet consectetur adipiscing elit sed do
eiusmod tempor incididunt ut labore et dolore magna aliqua enim ad minim veniam quis nostrud
exercitation ullamco laboris nisi aliquip ex ea commodo consequat duis aute irure in
reprehenderit voluptate velit esse cillum eu fugiat nulla pariatur excepteur sint occaecat
cupidatat non proident sunt culpa qui officia deserunt mollit anim id est laborum`)

// Bounds of the natural length of an answer: past it the worker stops by
// itself (finish_reason "stop") unless max_tokens cut it short first.
const (
	minNatural = 8
	maxNatural = 64
)

// generator yields the deterministic answer to one prompt: a splitmix64
// sequence seeded by the FNV-1a hash of the prompt text picks the words and
// the answer's natural length.
type generator struct {
	state   uint64
	natural int
	i       int
}

func newGenerator(prompt string) *generator {
	h := fnv.New64a()
	_, _ = h.Write([]byte(prompt))
	g := &generator{state: h.Sum64()}
	g.natural = minNatural + int(g.next()%(maxNatural-minNatural+1))
	return g
}

func (g *generator) next() uint64 {
	g.state += 0x9e3779b97f4a7c15
	z := g.state
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// token returns the next token: a word, with a leading space after the first.
func (g *generator) token() string {
	w := vocabulary[g.next()%uint64(len(vocabulary))]
	g.i++
	if g.i == 1 {
		return strings.ToUpper(w[:1]) + w[1:]
	}
	return " " + w
}

// skip moves g past the tokens of text, an answer's beginning that was
// already given: what follows is the rest of the same answer.
func (g *generator) skip(text string) {
	for range countTokens(text) {
		g.token()
	}
}

// countTokens is the reference worker's tokenizer: one token per
// whitespace-separated word.
func countTokens(s string) int { return len(strings.Fields(s)) }

// generate produces up to limit tokens of the rest of g's answer, handing each to emit
// and pacing them at the worker's token rate. It stops early, with ctx's
// error or emit's, when the client goes away. finish is "stop" when the
// answer reached its natural end and "length" when limit cut it short.
func (s *Server) generate(ctx context.Context, g *generator, limit int, emit func(string) error) (n int, finish string, err error) {
	active := s.active.Add(1)
	defer s.active.Add(-1)
	for peak := s.peak.Load(); active > peak && !s.peak.CompareAndSwap(peak, active); peak = s.peak.Load() {
	}
	var tick <-chan time.Time
	if s.cfg.TokenRate > 0 {
		t := time.NewTicker(time.Duration(float64(time.Second) / s.cfg.TokenRate))
		defer t.Stop()
		tick = t.C
	}
	total := min(limit, g.natural-g.i)
	for n < total {
		if tick != nil {
			select {
			case <-ctx.Done():
				return n, "", ctx.Err()
			case <-tick:
			}
		} else if err := ctx.Err(); err != nil {
			return n, "", err
		}
		tok := g.token()
		s.tokens.Add(1)
		n++
		if err := emit(tok); err != nil {
			return n, "", err
		}
	}
	if g.i == g.natural {
		return n, "stop", nil
	}
	return n, "length", nil
}
