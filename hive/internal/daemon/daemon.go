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
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"rbee.dev/hive/agent"
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
	fs.IntVar(&cfg.Slots, "slots", cfg.Slots, "jobs run at the same time")
	fs.BoolVar(&cfg.AllowRun, "allow-run", false, "permit the run operation (arbitrary commands)")
	fs.StringVar(&labels, "labels", "", "placement labels, k=v,k=v")
	fs.StringVar(&cfg.MetricsAddr, "metrics-addr", "", "address for /metrics, e.g. 127.0.0.1:9100")
	fs.Uint64Var(&cfg.MaxEvents, "max-events", cfg.MaxEvents, "narration events kept per job (0: no cap)")
	fs.DurationVar(&cfg.AckWait, "ack-wait", cfg.AckWait, "work-queue ack wait; progress is signalled at a third of it")
	fs.BoolVar(&verbose, "verbose", false, "debug logging")
	if err := parseWithEnv(fs, args, "HIVE_", getenv); err != nil {
		return err
	}
	var err error
	if cfg.Labels, err = parseLabels(labels); err != nil {
		return err
	}
	level := slog.LevelInfo
	if verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	nc, err := nats.Connect(natsURL,
		nats.Name("hive "+cfg.ID),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		nats.RetryOnFailedConnect(true),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { log.Warn("nats disconnected", "err", err) }),
		nats.ReconnectHandler(func(c *nats.Conn) { log.Info("nats reconnected", "url", c.ConnectedUrl()) }),
	)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", natsURL, err)
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
