// Package daemon boots a hive process: configuration from defaults,
// environment and flags, the NATS connection, and the agent.
package daemon

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"rbee.dev/hive/agent"
	"rbee.dev/shared/api"
	"rbee.dev/shared/bus"
	"rbee.dev/shared/secret"
)

// Run parses args (with HIVE_* environment twins), connects to NATS and
// serves until ctx ends.
func Run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	cfg := agent.DefaultConfig()
	natsURL := nats.DefaultURL
	var labels string
	var verbose bool
	fs := flag.NewFlagSet("hive", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.ID, "id", cfg.ID, "hive id (letters, digits, '-', '_')")
	fs.StringVar(&natsURL, "nats-url", natsURL, "NATS server URL (the queen's --nats-listen address)")
	fs.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "directory for models, work files and state")
	fs.IntVar(&cfg.Slots, "slots", cfg.Slots, "jobs run at the same time, inference not counted")
	fs.IntVar(&cfg.InferSlots, "infer-slots", cfg.InferSlots, "inference jobs held at the same time, running or waiting for a worker with room")
	fs.BoolVar(&cfg.AllowRun, "allow-run", false, "permit the run operation (arbitrary commands)")
	fs.Func("allow-run-commands", "with --allow-run, the only executables run may start: comma-separated absolute paths or bare names looked up in PATH", func(v string) error {
		for _, name := range strings.Split(v, ",") {
			name = strings.TrimSpace(name)
			if strings.Contains(name, "/") && !strings.HasPrefix(name, "/") {
				return fmt.Errorf("%q is neither an absolute path nor a bare name", name)
			}
			if name != "" {
				cfg.RunAllow = append(cfg.RunAllow, name)
			}
		}
		return nil
	})
	fs.StringVar(&labels, "labels", "", "placement labels, k=v,k=v")
	fs.StringVar(&cfg.MetricsAddr, "metrics-addr", "", "address for /metrics, e.g. 127.0.0.1:9100")
	fs.Uint64Var(&cfg.MaxEvents, "max-events", cfg.MaxEvents, "narration events kept per job (0: no cap)")
	fs.DurationVar(&cfg.AckWait, "ack-wait", cfg.AckWait, "work-queue ack wait; progress is signalled at a third of it")
	fs.StringVar(&cfg.ConfigFile, "config", "", "hive config file (JSON) with the worker catalog; default: the built-in catalog")
	fs.Var((*api.ByteSize)(&cfg.MaxModelBytes), "max-model-bytes", "largest model file a download may bring, e.g. 256GiB; larger ones are refused or cut off")
	fs.Var((*api.ByteSize)(&cfg.MinFreeDisk), "min-free-disk", "disk space downloads leave free on the models directory's disk, e.g. 5GiB")
	var creds natsCreds
	fs.StringVar(&creds.user, "nats-user", "", "NATS user (the hive id in a generated nats-config)")
	fs.StringVar(&creds.password, "nats-password", "", "NATS password; prefer --nats-password-file or the HIVE_NATS_PASSWORD variable: a command line is visible to every local user")
	var passwordFile string
	fs.StringVar(&passwordFile, "nats-password-file", "", "file holding the NATS password (surrounding whitespace ignored)")
	fs.StringVar(&creds.ca, "nats-ca", "", "CA file to verify the NATS server's TLS certificate")
	fs.StringVar(&creds.cert, "nats-cert", "", "client certificate for NATS TLS")
	fs.StringVar(&creds.key, "nats-key", "", "client key for NATS TLS")
	fs.BoolVar(&verbose, "verbose", false, "debug logging")
	var simulate int
	fs.IntVar(&simulate, "simulate", 0, "run this many simulated hives in this process instead of one real one, for benchmarks: ids <id>-0001..., each with its own NATS connection, every job's work a pause of --simulate-work")
	fs.DurationVar(&cfg.Simulate, "simulate-work", 10*time.Millisecond, "with --simulate, how long each job's work takes")
	if err := parseWithEnv(fs, args, "HIVE_", getenv); err != nil {
		return err
	}
	var err error
	if passwordFile != "" {
		if creds.password != "" {
			return errors.New("nats-password and nats-password-file exclude each other")
		}
		if creds.password, err = secret.ReadFile(passwordFile); err != nil {
			return fmt.Errorf("nats-password-file: %w", err)
		}
	}
	if cfg.Labels, err = parseLabels(labels); err != nil {
		return err
	}
	if simulate < 0 {
		return fmt.Errorf("simulate: %d hives; give a count, or leave it out for one real hive", simulate)
	}
	if simulate == 0 && flagSet(fs, "simulate-work") {
		return errors.New("simulate-work applies only with --simulate")
	}
	if simulate > 0 && cfg.Simulate <= 0 {
		// A simulated hive with no pause would do each job's real work.
		return fmt.Errorf("simulate-work must be positive, not %s", cfg.Simulate)
	}
	level := slog.LevelInfo
	if verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	if simulate > 0 {
		return simulateHives(ctx, cfg, simulate, natsURL, creds, log)
	}
	cfg.Simulate = 0

	// A connection NATS closes for good (a refused password, say) ends the
	// hive with the reason, rather than leaving it waiting forever.
	ctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	nc, err := nats.Connect(natsURL, append(creds.options(cfg.ID),
		nats.ClosedHandler(func(c *nats.Conn) {
			if err := c.LastError(); err != nil {
				stop(fmt.Errorf("nats connection closed: %w", err))
			}
		}),
		nats.RetryOnFailedConnect(true), bus.LogRetries(log),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { log.Warn("nats disconnected", "err", err) }),
		nats.ReconnectHandler(func(c *nats.Conn) { log.Info("nats reconnected", "url", c.ConnectedUrlRedacted()) }),
	)...)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", secret.RedactURLs(natsURL), err)
	}
	defer nc.Drain()
	a, err := agent.New(cfg, nc, log)
	if err != nil {
		return err
	}
	if cfg.MetricsAddr != "" {
		stop, err := serveMetrics(cfg.MetricsAddr, a.Registry(), log)
		if err != nil {
			return err
		}
		defer stop()
	}
	if err := a.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	return nil
}

// serveMetrics serves /metrics with the hive's series plus the Go and
// process collectors of this process.
func serveMetrics(addr string, hive *prometheus.Registry, log *slog.Logger) (func(), error) {
	proc := prometheus.NewRegistry()
	proc.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(prometheus.Gatherers{proc, hive}, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(`{"status":"ok"}`)) })
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listen %s: %w", addr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server", "err", err)
		}
	}()
	return func() { _ = srv.Close() }, nil
}

// natsCreds are how a hive proves who it is to NATS.
type natsCreds struct{ user, password, ca, cert, key string }

// options turns the credentials into connection options, after those
// every hive connection needs (bus.HiveOptions).
func (c natsCreds) options(id string) []nats.Option {
	opts := bus.HiveOptions(id)
	if c.user != "" {
		opts = append(opts, nats.UserInfo(c.user, c.password))
	}
	if c.ca != "" {
		opts = append(opts, nats.RootCAs(c.ca))
	}
	if c.cert != "" || c.key != "" {
		opts = append(opts, nats.ClientCert(c.cert, c.key))
	}
	return opts
}

// parseWithEnv parses flags; a flag not given on the command line takes its
// value from the environment variable PREFIX + NAME (dashes to underscores).
func parseWithEnv(fs *flag.FlagSet, args []string, prefix string, getenv func(string) string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		name := prefix + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v := getenv(name); v != "" && !set[f.Name] && err == nil {
			if e := f.Value.Set(v); e != nil {
				err = fmt.Errorf("%s: %w", name, e)
			}
		}
	})
	return err
}

func parseLabels(s string) (map[string]string, error) {
	if s == "" {
		return nil, nil
	}
	out := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("label %q must be key=value", kv)
		}
		out[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	return out, nil
}

// simulateHives runs n hives, the real agent each with its own NATS
// connection and data directory, whose jobs' work is a pause: a thousand
// fit on one machine, to measure what a large cluster costs the queens.
func simulateHives(ctx context.Context, cfg agent.Config, n int, natsURL string, creds natsCreds, log *slog.Logger) error {
	if n > 100_000 {
		return fmt.Errorf("simulate: %d hives is more than 100000", n)
	}
	// One line per hive would drown what matters.
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	if log.Enabled(ctx, slog.LevelDebug) {
		quiet = log
	}
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	errs := make(chan error, n+1)
	// Why NATS cannot be reached is said once for all the hives, and a
	// connection NATS closes for good (a refused password) ends them all.
	retries := bus.LogRetries(log)
	report := func(err error) {
		select {
		case errs <- err:
		default: // one reason is enough
		}
		stop()
	}
	closed := nats.ClosedHandler(func(c *nats.Conn) {
		// A connection closed on the way out is no failure.
		if err := c.LastError(); err != nil && ctx.Err() == nil {
			report(fmt.Errorf("nats connection closed: %w", err))
		}
	})
	for i := 1; i <= n; i++ {
		c := cfg
		c.ID = fmt.Sprintf("%s-%04d", cfg.ID, i)
		c.DataDir = filepath.Join(cfg.DataDir, c.ID)
		nc, err := nats.Connect(natsURL, append(creds.options(c.ID), nats.RetryOnFailedConnect(true), retries, closed)...)
		if err != nil {
			stop()
			wg.Wait()
			return fmt.Errorf("simulated hive %s: connect to %s: %w", c.ID, secret.RedactURLs(natsURL), err)
		}
		a, err := agent.New(c, nc, quiet)
		if err != nil {
			nc.Close()
			stop()
			wg.Wait()
			return fmt.Errorf("simulated hive %s: %w", c.ID, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer nc.Close()
			if err := a.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
				report(fmt.Errorf("simulated hive %s: %w", c.ID, err))
			}
		}()
	}
	log.Info("simulated hives running", "hives", n, "work", cfg.Simulate, "first", fmt.Sprintf("%s-%04d", cfg.ID, 1))
	<-ctx.Done()
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

// flagSet reports whether name was given on the command line.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
