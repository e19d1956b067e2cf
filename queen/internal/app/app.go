// Package app boots a queen: NATS (embedded or external), the streams and
// buckets, the live narration tail, the cluster view, the job lifecycle, the
// HTTP API and, when asked, an in-process hive. Each part runs under one
// errgroup and stops with the others.
package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"rbee.dev/hive/agent"
	"rbee.dev/queen/internal/auth"
	"rbee.dev/queen/internal/embedded"
	"rbee.dev/queen/internal/httpapi"
	"rbee.dev/queen/internal/jobs"
	"rbee.dev/queen/internal/metrics"
	"rbee.dev/queen/internal/natsauth"
	"rbee.dev/queen/internal/openai"
	"rbee.dev/queen/internal/relay"
	"rbee.dev/queen/internal/store"
	"rbee.dev/queen/internal/view"
	"rbee.dev/shared/bus"
	"rbee.dev/shared/secret"
)

// Run starts a queen from command-line arguments and serves until ctx ends.
func Run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "nats-config" {
		return natsConfig(args[1:], stdout, stderr)
	}
	cfg, err := ParseConfig(args, getenv, stderr)
	if err != nil {
		return err
	}
	level := slog.LevelInfo
	if cfg.Verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	q, err := Start(ctx, cfg, log)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "queen listening on http://%s\n", q.HTTPAddr())
	if u := q.NATSURL(); u != "" {
		fmt.Fprintf(stdout, "nats for hives at %s\n", u)
	}
	return q.Wait()
}

// Queen is a running queen.
type Queen struct {
	cfg    Config
	log    *slog.Logger
	ns     *server.Server
	nc     *nats.Conn
	ln     net.Listener
	creds  nats.Option
	srv    *http.Server
	cancel context.CancelFunc
	g      *errgroup.Group
	once   sync.Once
	err    error
}

// Start boots a queen and returns once it accepts HTTP requests.
func Start(ctx context.Context, cfg Config, log *slog.Logger) (*Queen, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	limit, auto, err := narrationLimit(cfg.NarrationMaxBytes, cfg.DataDir)
	if err != nil {
		return nil, err
	}
	cfg.NarrationMaxBytes = limit
	// No job may be promised more than the whole stream holds; a budget
	// left at its default shrinks with a small stream rather than refuse
	// to start.
	cfg.JobMaxNarrationBytes = min(cfg.JobMaxNarrationBytes, limit)
	q := &Queen{cfg: cfg, log: log}
	log = log.With("component", "queen")
	ok := false
	defer func() {
		if !ok {
			if q.ln != nil {
				_ = q.ln.Close()
			}
			q.shutdownNATS()
		}
	}()
	if err := q.connect(); err != nil {
		return nil, err
	}
	st, err := store.Open(ctx, q.nc, store.Options{
		Replicas: cfg.Replicas, Retention: cfg.Retention, HiveTTL: cfg.HiveTTL, MaxEventsPerJob: cfg.MaxEventsPerJob,
		// An external server may hold less than a tenth of our disk; a
		// default then shrinks to what it can reserve.
		NarrationMaxBytes: limit, NarrationFit: auto && cfg.NATSURL != "", Log: log,
	})
	if err != nil && !q.nc.IsConnected() {
		// The store's first request timed out for want of a connection:
		// that is what to fix.
		why := "never connected"
		if last := q.nc.LastError(); last != nil {
			why = last.Error()
		}
		return nil, fmt.Errorf("NATS at %s cannot be reached (%s): %w", secret.RedactURLs(cfg.NATSURL), why, err)
	}
	if err != nil {
		return nil, err
	}
	if got := st.NarrationMaxBytes(); got != limit {
		log.Info("narration bound shrunk to what NATS can reserve", "max_bytes", got)
		cfg.JobMaxNarrationBytes = min(cfg.JobMaxNarrationBytes, got)
	}
	q.ln, err = net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", cfg.HTTPAddr, err)
	}
	if cfg.TLSCert != "" {
		tc, err := serverTLS(cfg.TLSCert, cfg.TLSKey, cfg.TLSClientCA)
		if err != nil {
			return nil, fmt.Errorf("https: %w", err)
		}
		q.ln = tls.NewListener(q.ln, tc)
	}

	runCtx, cancel := context.WithCancel(context.Background())
	q.cancel = cancel
	hub := relay.NewHub(st.NarrationReader(), log, cfg.SSEBuffer)
	v := view.New(log, view.DefaultRecent)
	m := metrics.New(metrics.Gauges{
		JobsByState: v.CountByState, HivesOnline: func() int { return len(v.Hives()) },
		SSEClients: hub.Clients, Relayed: hub.Relayed, SSEOverflows: hub.Overflows,
		NATSConnected: q.nc.IsConnected, NATSTraffic: q.nc.Stats,
	})
	q.nc.SetReconnectHandler(func(c *nats.Conn) {
		m.NATSReconnect.Inc()
		log.Info("nats reconnected", "url", c.ConnectedUrlRedacted())
	})
	hub.Records = v
	hub.Rejected = func(reason string) { m.NarrationRejected.WithLabelValues(reason).Inc() }
	svc := jobs.New(st, v, m, log)
	svc.Delivered, svc.Expect = hub.Delivered, hub.Expect
	svc.Policy, svc.Retention = cfg.Placement, cfg.Retention
	svc.MaxNarrationBytes = cfg.JobMaxNarrationBytes
	svc.InferQueueDepth = cfg.Infer.QueueDepth
	// Whether keys are required is settled here, from configuration, and
	// never from how many keys the bucket holds: emptying it must not open
	// a keyed queen.
	required := cfg.AdminKey != "" || cfg.RequireKeys || (!loopback(q.ln.Addr()) && !cfg.Insecure)
	keys := auth.New(st.KeysBucket(), cfg.AdminKey, required, log)
	oai := openai.New(v, svc, st, hub, m, cfg.Infer, log)
	e := httpapi.New(httpapi.Deps{Store: st, Jobs: svc, View: v, Hub: hub, Metrics: m, Keys: keys, OpenAI: oai,
		PublicHosts: cfg.PublicHosts, MetricsAuth: cfg.MetricsAuth, Log: log, Heartbeat: cfg.SSEHeartbeat,
		JobMaxNarrationBytes: cfg.JobMaxNarrationBytes})
	// Deadlines for ordinary requests, so a slow or stalled client cannot
	// hold a connection: SSE streams and generations lift them once their
	// request is read and then flush at least once a heartbeat
	// (relay.KeepOpen).
	q.srv = &http.Server{
		Handler:           e,
		ReadHeaderTimeout: min(10*time.Second, cfg.HTTPTimeout),
		ReadTimeout:       cfg.HTTPTimeout,
		WriteTimeout:      cfg.HTTPTimeout,
		IdleTimeout:       2 * cfg.HTTPTimeout,
		BaseContext:       func(net.Listener) context.Context { return runCtx },
	}

	g, gctx := errgroup.WithContext(runCtx)
	q.g = g
	if cfg.LocalHive {
		if err := q.startLocalHive(gctx, g, m); err != nil {
			cancel()
			_ = g.Wait()
			return nil, err
		}
	}
	g.Go(func() error { return keys.Run(gctx) })
	select {
	case <-keys.Synced():
	case <-time.After(10 * time.Second):
		cancel()
		_ = g.Wait()
		return nil, errors.New("could not load API keys from NATS")
	}
	if required && cfg.AdminKey == "" && keys.Count() == 0 {
		cancel()
		_ = g.Wait()
		why := "--require-keys is set"
		if !loopback(q.ln.Addr()) {
			why = fmt.Sprintf("%s reaches beyond loopback", q.ln.Addr())
		}
		return nil, fmt.Errorf("refusing to start: %s, so every request needs an API key, and none exists: set --admin-key (or QUEEN_ADMIN_KEY), or --insecure to serve without keys", why)
	}
	g.Go(func() error { return hub.Run(gctx) })
	g.Go(func() error { return v.Run(gctx, st) })
	g.Go(func() error { return svc.RunApplier(gctx) })
	g.Go(func() error { return svc.RunReaper(gctx) })
	g.Go(func() error { return svc.RunDispatchConsumers(gctx) })
	g.Go(func() error {
		if err := q.srv.Serve(q.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("http: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		return q.srv.Shutdown(sctx)
	})
	if cfg.PprofAddr != "" {
		if err := servePprof(gctx, g, cfg.PprofAddr); err != nil {
			cancel()
			_ = g.Wait()
			return nil, err
		}
	}
	// Stop with the caller's context too.
	g.Go(func() error {
		select {
		case <-ctx.Done():
			cancel()
		case <-gctx.Done():
		}
		return nil
	})
	select {
	case <-hub.Ready():
	case <-gctx.Done():
		_ = g.Wait()
		return nil, errors.New("queen stopped while starting")
	}
	ok = true
	if q.ns != nil {
		log.Info("queen ready", "http", q.HTTPAddr(), "embedded_nats", true, "nats_sync", cfg.NATSSync.String(), "power_cut_loses", cfg.NATSSync.LossWindow())
	} else {
		log.Info("queen ready", "http", q.HTTPAddr(), "embedded_nats", false)
	}
	return q, nil
}

// servePprof serves Go's profiler on addr until ctx ends.
func servePprof(ctx context.Context, g *errgroup.Group, addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("pprof: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	g.Go(func() error {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("pprof: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-ctx.Done()
		return srv.Close()
	})
	return nil
}

func loopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}

// connect opens the NATS connection, starting the embedded server if no
// external one is configured.
func (q *Queen) connect() error {
	opts := append(bus.QueenOptions(),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { q.log.Warn("nats disconnected", "err", err) }))
	var auth *natsauth.File
	if q.cfg.NATSAuth != "" {
		f, err := natsauth.Load(q.cfg.NATSAuth)
		if err != nil {
			return err
		}
		auth = &f
		q.creds = nats.UserInfo(natsauth.QueenUser, f.QueenPassword)
		opts = append(opts, q.creds)
	}
	var err error
	if q.cfg.NATSURL != "" {
		opts = append(opts, q.tlsOptions()...)
		q.nc, err = nats.Connect(q.cfg.NATSURL, append(opts, nats.RetryOnFailedConnect(true), bus.LogRetries(q.log))...)
		if err != nil {
			return fmt.Errorf("connect to %s: %w", secret.RedactURLs(q.cfg.NATSURL), err)
		}
		return nil
	}
	eo := embedded.Options{Listen: q.cfg.NATSListen, Auth: auth, MaxStore: q.cfg.NarrationMaxBytes + storeHeadroom, Sync: q.cfg.NATSSync}
	if q.cfg.NATSCert != "" {
		if eo.TLS, err = serverTLS(q.cfg.NATSCert, q.cfg.NATSKey, q.cfg.NATSCA); err != nil {
			return fmt.Errorf("nats tls: %w", err)
		}
	}
	q.ns, err = embedded.Start(filepath.Join(q.cfg.DataDir, "nats"), eo)
	if err != nil {
		return err
	}
	q.nc, err = nats.Connect("", append(opts, nats.InProcessServer(q.ns))...)
	if err != nil {
		return fmt.Errorf("connect to embedded nats: %w", err)
	}
	return nil
}

// tlsOptions are the client TLS settings for an external NATS server.
func (q *Queen) tlsOptions() []nats.Option {
	var opts []nats.Option
	if q.cfg.NATSCA != "" {
		opts = append(opts, nats.RootCAs(q.cfg.NATSCA))
	}
	if q.cfg.NATSCert != "" {
		opts = append(opts, nats.ClientCert(q.cfg.NATSCert, q.cfg.NATSKey))
	}
	return opts
}

// serverTLS loads a server certificate; with a CA, clients must present a
// certificate it signed.
func serverTLS(certFile, keyFile, clientCA string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	c := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if clientCA != "" {
		pem, err := os.ReadFile(clientCA)
		if err != nil {
			return nil, err
		}
		c.ClientCAs = x509.NewCertPool()
		if !c.ClientCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("no certificates in %s", clientCA)
		}
		c.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return c, nil
}

// startLocalHive runs a hive named local on its own in-process connection.
func (q *Queen) startLocalHive(ctx context.Context, g *errgroup.Group, m *metrics.Queen) error {
	opts := bus.HiveOptions("local")
	if q.creds != nil {
		opts = append(opts, q.creds)
	}
	var nc *nats.Conn
	var err error
	if q.ns != nil {
		nc, err = nats.Connect("", append(opts, nats.InProcessServer(q.ns))...)
	} else {
		nc, err = nats.Connect(q.cfg.NATSURL, append(opts, q.tlsOptions()...)...)
	}
	if err != nil {
		return fmt.Errorf("local hive: %w", err)
	}
	hc := agent.DefaultConfig()
	hc.ID = "local"
	hc.DataDir = filepath.Join(q.cfg.DataDir, "hive")
	hc.AllowRun = q.cfg.LocalHiveAllowRun
	hc.Slots = q.cfg.LocalHiveSlots
	hc.ConfigFile = q.cfg.LocalHiveConfig
	a, err := agent.New(hc, nc, q.log)
	if err != nil {
		nc.Close()
		return fmt.Errorf("local hive: %w", err)
	}
	m.Gatherer = prometheus.Gatherers{m.Registry, a.Registry()}
	g.Go(func() error {
		defer nc.Close()
		return a.Run(ctx)
	})
	return nil
}

// HTTPAddr is the address the API listens on.
func (q *Queen) HTTPAddr() string { return q.ln.Addr().String() }

// NATSURL is where remote hives reach the embedded server, if it listens.
func (q *Queen) NATSURL() string {
	if q.ns == nil || q.cfg.NATSListen == "" {
		return ""
	}
	return q.ns.ClientURL()
}

// Wait blocks until the queen stops and returns why.
func (q *Queen) Wait() error {
	q.once.Do(func() {
		q.err = q.g.Wait()
		q.shutdownNATS()
	})
	return q.err
}

// Close stops the queen and waits for every part to end. It is safe to call
// more than once.
func (q *Queen) Close() error {
	q.cancel()
	return q.Wait()
}

func (q *Queen) shutdownNATS() {
	if q.nc != nil {
		_ = q.nc.Drain()
	}
	if q.ns != nil {
		q.ns.Shutdown()
		q.ns.WaitForShutdown()
	}
}
