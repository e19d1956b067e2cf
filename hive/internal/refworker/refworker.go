// Package refworker is rbee's reference inference worker: a small, CPU-only,
// deterministic HTTP server that speaks the same OpenAI-compatible API as
// llama-server and vLLM, so that the hive's worker supervision, the
// inference proxy and every test run on a laptop without a GPU or a model
// download.
//
// It is a test and demo backend, not a language model. Its completions are
// words of a fixed lorem-ipsum vocabulary chosen by a hash of the prompt: the
// same request always gets the same answer. It paces tokens at a configured
// rate, can pretend to load a model for a while (answering /health with 503,
// as llama-server does), stops generating as soon as the client goes away,
// and counts requests, cancellations and tokens on GET /stats so that tests
// can check all of that.
package refworker

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-multierror"
)

// Defaults of the worker's flags.
const (
	DefaultTokenRate = 50
	DefaultCtxSize   = 4096
	// DefaultMaxTokens is the completion length when a request sets none.
	DefaultMaxTokens = 16
)

// Config is what one reference worker serves.
type Config struct {
	Host string
	Port int
	// ModelPath is the model file. The worker never reads it; it only
	// checks that it exists, as a real server would fail to load it.
	ModelPath string
	// ModelID is the model name served; default: ModelPath's base name
	// without its extension.
	ModelID string
	// TokenRate is tokens per second per request; 0 is as fast as possible.
	TokenRate float64
	// LoadDelay is how long the worker pretends to load the model.
	LoadDelay time.Duration
	// CtxSize bounds prompt plus completion tokens.
	CtxSize int
	// Record, when set, is a file to which every POST request is appended
	// as a line of JSON (a Recorded), for tests that check what reached
	// the worker.
	Record string
	// Canned, when set, is a JSON file of answers by path (see Canned)
	// given instead of generated ones, for tests of what a real server
	// may answer: tool calls, vendor fields, errors.
	Canned string
}

// Validate reports every problem with c at once.
func (c Config) Validate() error {
	var errs *multierror.Error
	if c.ModelPath == "" && c.ModelID == "" {
		errs = multierror.Append(errs, errors.New("--model (a model file) or --model-id is required"))
	}
	if c.Port < 0 || c.Port > 65535 {
		errs = multierror.Append(errs, fmt.Errorf("port %d is out of range", c.Port))
	}
	if c.TokenRate < 0 {
		errs = multierror.Append(errs, fmt.Errorf("token rate must not be negative, not %g", c.TokenRate))
	}
	if c.LoadDelay < 0 {
		errs = multierror.Append(errs, errors.New("load delay must not be negative"))
	}
	if c.CtxSize < 1 {
		errs = multierror.Append(errs, fmt.Errorf("ctx size must be at least 1, not %d", c.CtxSize))
	}
	return errs.ErrorOrNil()
}

// modelID is the name the worker answers to.
func (c Config) modelID() string {
	if c.ModelID != "" {
		return c.ModelID
	}
	base := filepath.Base(c.ModelPath)
	if id := strings.TrimSuffix(base, filepath.Ext(base)); id != "" {
		return id
	}
	return base
}

// Main parses the worker's flags, serves until ctx ends and then shuts down,
// ending the requests in flight. Log lines go to stderr.
func Main(ctx context.Context, args []string, stderr io.Writer) error {
	cfg := Config{Host: "127.0.0.1", Port: 8080, TokenRate: DefaultTokenRate, CtxSize: DefaultCtxSize}
	fs := flag.NewFlagSet("rbee-worker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "rbee-worker: rbee's reference worker, a deterministic OpenAI-compatible test server (not a language model).")
		fmt.Fprintln(stderr, "\nUsage: rbee-worker --model FILE [flags]")
		fs.PrintDefaults()
	}
	fs.StringVar(&cfg.Host, "host", cfg.Host, "address to listen on")
	fs.IntVar(&cfg.Port, "port", cfg.Port, "port to listen on (0: any free port)")
	fs.StringVar(&cfg.ModelPath, "model", "", "model file; its base name without extension is the model id")
	fs.StringVar(&cfg.ModelID, "model-id", "", "model id to serve instead of the file's base name")
	fs.Float64Var(&cfg.TokenRate, "token-rate", cfg.TokenRate, "tokens per second per request (0: as fast as possible)")
	fs.DurationVar(&cfg.LoadDelay, "load-delay", 0, "simulated model load time; /health answers 503 meanwhile")
	fs.IntVar(&cfg.CtxSize, "ctx-size", cfg.CtxSize, "context size in tokens, prompt plus completion")
	fs.StringVar(&cfg.Record, "record", "", "append every POST request to this file, a JSON line each (for tests)")
	fs.StringVar(&cfg.Canned, "canned", "", "JSON file of answers by path, given instead of generated ones (for tests)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if cfg.CtxSize == 0 {
		cfg.CtxSize = DefaultCtxSize
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	if cfg.ModelPath != "" {
		if _, err := os.Stat(cfg.ModelPath); err != nil {
			return fmt.Errorf("model file: %w", err)
		}
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	// Checked here so that a bad file stops the worker; NewServer reads
	// it again.
	if _, err := loadCanned(cfg.Canned); err != nil {
		return err
	}

	ln, err := net.Listen("tcp", net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port)))
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	s := NewServer(cfg, log)
	// Request contexts derive from ctx, so stopping the worker ends
	// streaming responses at once instead of waiting them out.
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	log.Info("rbee reference worker listening", "url", "http://"+ln.Addr().String(), "model", s.modelID, "ctx_size", cfg.CtxSize, "token_rate", cfg.TokenRate)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	if err := s.Load(ctx); err != nil {
		log.Info("stopped while loading")
	}
	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down", "requests", s.requests.Load(), "tokens", s.tokens.Load())
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	return nil
}

// Server is one reference worker's HTTP service.
type Server struct {
	cfg     Config
	modelID string
	created int64
	log     *slog.Logger
	ready   atomic.Bool
	rec     *recorder

	requests  atomic.Int64
	cancelled atomic.Int64
	tokens    atomic.Int64
	ids       atomic.Uint64
	// active and peak count generations in progress now and at most.
	active, peak atomic.Int64
}

// NewServer makes a worker that is still loading; call Load to make it ready.
func NewServer(cfg Config, log *slog.Logger) *Server {
	if cfg.CtxSize < 1 {
		cfg.CtxSize = DefaultCtxSize
	}
	canned, err := loadCanned(cfg.Canned)
	if err != nil {
		log.Error("canned answers not used", "err", err)
	}
	return &Server{cfg: cfg, modelID: cfg.modelID(), created: time.Now().Unix(), log: log,
		rec: &recorder{file: cfg.Record, canned: canned}}
}

// Load waits out the configured load delay, logging as a model server
// would, then marks the worker ready. It returns ctx's error if ctx ends
// first, leaving the worker not ready.
func (s *Server) Load(ctx context.Context) error {
	s.log.Info("loading model", "model", s.modelID, "path", s.cfg.ModelPath, "load_delay", s.cfg.LoadDelay.String())
	if s.cfg.LoadDelay > 0 {
		t := time.NewTimer(s.cfg.LoadDelay)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	s.ready.Store(true)
	s.log.Info("model loaded; ready", "model", s.modelID)
	return nil
}

// Stats counts the completion requests a worker has served.
type Stats struct {
	// Requests is every completion request accepted for generation.
	Requests int64 `json:"requests"`
	// Cancelled is the requests whose client went away mid-generation.
	Cancelled int64 `json:"cancelled"`
	// Tokens is every completion token generated.
	Tokens int64 `json:"tokens"`
	// Active is the generations in progress; PeakActive the most there
	// have been at once, to check what a hive sends a worker.
	Active     int64 `json:"active"`
	PeakActive int64 `json:"peak_active"`
}

// Stats returns the counters.
func (s *Server) Stats() Stats {
	return Stats{Requests: s.requests.Load(), Cancelled: s.cancelled.Load(), Tokens: s.tokens.Load(),
		Active: s.active.Load(), PeakActive: s.peak.Load()}
}
