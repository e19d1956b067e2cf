package app

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/go-multierror"

	"rbee.dev/queen/internal/embedded"
	"rbee.dev/queen/internal/jobs"
	"rbee.dev/queen/internal/openai"
	"rbee.dev/shared/api"
	"rbee.dev/shared/secret"
)

// Config is everything a queen is told at start.
type Config struct {
	HTTPAddr   string
	DataDir    string
	NATSURL    string
	NATSListen string
	// NATSAuth is a credentials file from `queen nats-config`.
	NATSAuth string
	// NATS client TLS (external server) or listener TLS (embedded).
	NATSCA, NATSCert, NATSKey string
	// HTTP TLS; with TLSClientCA clients must present a certificate.
	TLSCert, TLSKey, TLSClientCA string

	LocalHive         bool
	LocalHiveAllowRun bool
	LocalHiveSlots    int
	LocalHiveConfig   string

	HiveTTL   time.Duration
	Retention time.Duration
	Replicas  int
	AdminKey  string
	// AdminKeyFile holds the admin key, so it need not be on the command
	// line, where every local user can read it.
	AdminKeyFile string
	// RequireKeys makes every request carry an API key even on loopback.
	RequireKeys bool
	// PublicHosts are the names, besides localhost, clients may reach the
	// queen by; any other name in a Host header is refused (DNS rebinding).
	PublicHosts  hostList
	Insecure     bool
	MetricsAuth  bool
	Placement    string
	Infer        openai.Config
	SSEHeartbeat time.Duration
	// HTTPTimeout bounds reading a request and writing an ordinary answer;
	// streams lift it and flush at least once a heartbeat.
	HTTPTimeout     time.Duration
	SSEBuffer       int
	MaxEventsPerJob int64
	// NarrationMaxBytes bounds the NARR stream, and the embedded server's
	// store with it; 0 is 10% of the data dir's disk, at most 50 GiB.
	NarrationMaxBytes int64
	// JobMaxNarrationBytes is each job's narration budget; 0 is none.
	JobMaxNarrationBytes int64
	// NATSSync is when the embedded server forces JetStream's writes to
	// disk. An external server takes its own sync_interval.
	NATSSync embedded.Sync
	// natsSyncSet is true when --nats-sync was given.
	natsSyncSet bool
	// PprofAddr serves Go's profiler (net/http/pprof) there when set.
	PprofAddr string
	Verbose   bool
}

// DefaultConfig is the single-machine setup: loopback only, embedded NATS.
func DefaultConfig() Config {
	return Config{
		HTTPAddr:       "127.0.0.1:7833",
		DataDir:        "data/queen",
		LocalHiveSlots: 4,
		HiveTTL:        15 * time.Second,
		Retention:      72 * time.Hour,
		Replicas:       1,
		SSEHeartbeat:   15 * time.Second,
		NATSSync:       embedded.DefaultSync,
		HTTPTimeout:    time.Minute,
		SSEBuffer:      1024,
		Placement:      jobs.Spread,
		// A gigabyte of narration is far more than any job's story needs,
		// and small beside the disk share the stream gets.
		JobMaxNarrationBytes: 1 << 30,
		Infer: openai.Config{
			Backend: "reference", IdleTimeout: 10 * time.Minute, QueueDepth: 256, SpawnTimeout: 5 * time.Minute,
		},
	}
}

// ParseConfig reads flags, each with a QUEEN_* environment twin that a flag
// given on the command line overrides.
func ParseConfig(args []string, getenv func(string) string, stderr io.Writer) (Config, error) {
	c := DefaultConfig()
	fs := flag.NewFlagSet("queen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.HTTPAddr, "http-addr", c.HTTPAddr, "HTTP listen address")
	fs.StringVar(&c.DataDir, "data-dir", c.DataDir, "directory for the embedded NATS store")
	fs.StringVar(&c.NATSURL, "nats-url", "", "external NATS URL; empty runs an embedded NATS server")
	fs.StringVar(&c.NATSListen, "nats-listen", "", "address where the embedded NATS server accepts remote hives, e.g. 0.0.0.0:4222")
	fs.StringVar(&c.NATSAuth, "nats-auth", "", "NATS credentials file from `queen nats-config`: per-hive users and permissions")
	fs.StringVar(&c.NATSCA, "nats-ca", "", "CA file: verify the external NATS server, or require client certificates on the embedded listener")
	fs.StringVar(&c.NATSCert, "nats-cert", "", "certificate: client cert for external NATS, server cert for the embedded listener")
	fs.StringVar(&c.NATSKey, "nats-key", "", "key for --nats-cert")
	fs.StringVar(&c.TLSCert, "tls-cert", "", "serve HTTPS with this certificate")
	fs.StringVar(&c.TLSKey, "tls-key", "", "key for --tls-cert")
	fs.StringVar(&c.TLSClientCA, "tls-client-ca", "", "require HTTPS clients to present a certificate signed by this CA")
	fs.BoolVar(&c.LocalHive, "local-hive", false, "also run a hive named local in this process")
	fs.BoolVar(&c.LocalHiveAllowRun, "local-hive-allow-run", false, "let the local hive run commands (the run operation)")
	fs.IntVar(&c.LocalHiveSlots, "local-hive-slots", c.LocalHiveSlots, "concurrent jobs on the local hive")
	fs.StringVar(&c.LocalHiveConfig, "local-hive-config", "", "hive config file (worker catalog) for the local hive")
	fs.DurationVar(&c.HiveTTL, "hive-ttl", c.HiveTTL, "a hive without a heartbeat for this long is lost")
	fs.DurationVar(&c.Retention, "retention", c.Retention, "how long job records and narration are kept")
	fs.StringVar(&c.AdminKey, "admin-key", "", "bootstrap API key with the admin scope; turns authentication on (prefer --admin-key-file or QUEEN_ADMIN_KEY: a command line is visible to every local user)")
	fs.StringVar(&c.AdminKeyFile, "admin-key-file", "", "file holding the admin key (surrounding whitespace ignored)")
	fs.BoolVar(&c.RequireKeys, "require-keys", false, "require an API key on every request, even on loopback (on beyond loopback or with --admin-key)")
	fs.Var(&c.PublicHosts, "public-host", "a name clients reach the queen by, besides localhost and IP addresses (repeatable; QUEEN_PUBLIC_HOST takes a comma-separated list)")
	fs.BoolVar(&c.Insecure, "insecure", false, "allow HTTP beyond loopback without API keys, and a NATS listener without per-hive identities (and, beyond loopback, TLS)")
	fs.BoolVar(&c.MetricsAuth, "metrics-auth", false, "require a key with the read scope for /metrics")
	fs.StringVar(&c.Placement, "placement", c.Placement, "placement policy: spread (most free slots) or binpack (fill the busiest hive first)")
	fs.StringVar(&c.Infer.Backend, "infer-backend", c.Infer.Backend, "worker catalog entry used to start a worker for an inference request")
	fs.DurationVar(&c.Infer.IdleTimeout, "infer-idle-timeout", c.Infer.IdleTimeout, "workers started for inference stop after this long unused (0: never)")
	fs.IntVar(&c.Infer.QueueDepth, "infer-queue-depth", c.Infer.QueueDepth, "requests per model waiting in the cluster's queue (over every queen) before 429")
	fs.DurationVar(&c.Infer.SpawnTimeout, "infer-spawn-timeout", c.Infer.SpawnTimeout, "how long a request waits for a worker to start")
	fs.Var((*aliasList)(&c.Infer.Aliases), "alias", "NAME=MODEL: clients asking for model NAME get MODEL (repeatable; QUEEN_ALIAS takes a comma-separated list)")
	fs.IntVar(&c.Replicas, "replicas", c.Replicas, "JetStream replicas for streams and buckets (3 on a NATS cluster)")
	fs.DurationVar(&c.SSEHeartbeat, "sse-heartbeat", c.SSEHeartbeat, "interval of SSE heartbeat comments")
	fs.IntVar(&c.SSEBuffer, "sse-buffer", c.SSEBuffer, "live events buffered per SSE client before it is switched to catching up from the stream")
	fs.Int64Var(&c.MaxEventsPerJob, "max-events-per-job", 0, "stream-side cap on one writer's events per job (0: none)")
	fs.Var((*api.ByteSize)(&c.NarrationMaxBytes), "narration-max-bytes", "bytes the narration stream (and the embedded NATS store) may hold, e.g. 20GiB (default 10% of the data dir's disk, at most 50GiB)")
	fs.Var((*api.ByteSize)(&c.JobMaxNarrationBytes), "job-max-narration-bytes", "narration one job may store, e.g. 1GiB; a job past it ends failed (0: no budget)")
	fs.Var(&c.NATSSync, "nats-sync", "when the embedded NATS server forces writes to disk: always, a duration such as 1s (what a power cut may lose), or default (the server's 2m)")
	fs.StringVar(&c.PprofAddr, "pprof-addr", "", "serve Go's profiler on this address, e.g. 127.0.0.1:6060 (loopback only: it has no authentication)")
	fs.BoolVar(&c.Verbose, "verbose", false, "debug logging")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs *multierror.Error
	fs.VisitAll(func(f *flag.Flag) {
		name := "QUEEN_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v := getenv(name); v != "" && !set[f.Name] {
			if err := f.Value.Set(v); err != nil {
				errs = multierror.Append(errs, fmt.Errorf("%s: %w", name, err))
			}
		}
	})
	if err := errs.ErrorOrNil(); err != nil {
		return c, err
	}
	c.natsSyncSet = set["nats-sync"] || getenv("QUEEN_NATS_SYNC") != ""
	if c.AdminKeyFile != "" && c.AdminKey == "" {
		key, err := secret.ReadFile(c.AdminKeyFile)
		if err != nil {
			return c, fmt.Errorf("admin-key-file: %w", err)
		}
		c.AdminKey = key
	} else if c.AdminKeyFile != "" {
		return c, errors.New("admin-key and admin-key-file exclude each other")
	}
	return c, c.Validate()
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs *multierror.Error
	if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		errs = multierror.Append(errs, fmt.Errorf("http-addr %q: %w", c.HTTPAddr, err))
	}
	if c.PprofAddr != "" {
		host, _, err := net.SplitHostPort(c.PprofAddr)
		if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
			errs = multierror.Append(errs, fmt.Errorf("pprof-addr %q must be a loopback address and port", c.PprofAddr))
		}
	}
	if c.NATSListen != "" {
		if _, _, err := net.SplitHostPort(c.NATSListen); err != nil {
			errs = multierror.Append(errs, fmt.Errorf("nats-listen %q: %w", c.NATSListen, err))
		}
		if c.NATSURL != "" {
			errs = multierror.Append(errs, errors.New("nats-listen applies to the embedded server only; drop it or nats-url"))
		}
		if err := c.natsListenSafe(); err != nil {
			errs = multierror.Append(errs, err)
		}
	}
	if c.natsSyncSet && c.NATSURL != "" {
		errs = multierror.Append(errs, errors.New("nats-sync applies to the embedded server only; set sync_interval in the NATS server's jetstream block"))
	}
	if c.NATSURL == "" && c.DataDir == "" {
		errs = multierror.Append(errs, errors.New("data-dir is required for the embedded NATS server"))
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		errs = multierror.Append(errs, errors.New("tls-cert and tls-key go together"))
	}
	if c.TLSClientCA != "" && c.TLSCert == "" {
		errs = multierror.Append(errs, errors.New("tls-client-ca needs tls-cert and tls-key"))
	}
	if (c.NATSCert == "") != (c.NATSKey == "") {
		errs = multierror.Append(errs, errors.New("nats-cert and nats-key go together"))
	}
	if c.HiveTTL < time.Second {
		errs = multierror.Append(errs, errors.New("hive-ttl must be at least 1s"))
	}
	if c.Retention < time.Second {
		errs = multierror.Append(errs, errors.New("retention must be at least 1s"))
	}
	if c.Replicas != 1 && c.Replicas != 3 && c.Replicas != 5 {
		errs = multierror.Append(errs, errors.New("replicas must be 1, 3 or 5"))
	}
	if c.SSEHeartbeat < 100*time.Millisecond || c.SSEHeartbeat > 30*time.Second {
		errs = multierror.Append(errs, errors.New("sse-heartbeat must be between 100ms and 30s: a stream that writes nothing for a minute is cut off"))
	}
	if c.HTTPTimeout < time.Second {
		errs = multierror.Append(errs, errors.New("http timeout must be at least 1s"))
	}
	if c.SSEBuffer < 1 || c.SSEBuffer > 1<<20 {
		errs = multierror.Append(errs, errors.New("sse-buffer must be between 1 and 1048576"))
	}
	if c.Infer.QueueDepth < 1 || c.Infer.SpawnTimeout < time.Second || c.Infer.IdleTimeout < 0 {
		errs = multierror.Append(errs, errors.New("infer-queue-depth must be at least 1, infer-spawn-timeout at least 1s, infer-idle-timeout not negative"))
	}
	if c.Placement != jobs.Spread && c.Placement != jobs.Binpack {
		errs = multierror.Append(errs, fmt.Errorf("placement must be %s or %s", jobs.Spread, jobs.Binpack))
	}
	if c.NarrationMaxBytes < 0 {
		errs = multierror.Append(errs, errors.New("narration-max-bytes must not be negative"))
	}
	// A budget must leave room for a 64 KiB event and the narration
	// around it.
	if c.JobMaxNarrationBytes != 0 && c.JobMaxNarrationBytes < minJobBudget {
		errs = multierror.Append(errs, fmt.Errorf("job-max-narration-bytes must be 0 (no budget) or at least %d (256KiB)", minJobBudget))
	}
	for name, model := range c.Infer.Aliases {
		if _, chained := c.Infer.Aliases[model]; chained {
			errs = multierror.Append(errs, fmt.Errorf("alias %s=%s: %s is an alias itself; name the model", name, model, model))
		}
	}
	if c.LocalHiveSlots < 1 {
		errs = multierror.Append(errs, errors.New("local-hive-slots must be at least 1"))
	}
	return errs.ErrorOrNil()
}

// hostList is a repeatable flag of host names; one value may list several,
// separated by commas.
type hostList []string

func (h *hostList) String() string { return strings.Join(*h, ",") }

func (h *hostList) Set(v string) error {
	for _, name := range strings.Split(v, ",") {
		name = strings.ToLower(strings.TrimSpace(name))
		if name == "" {
			continue
		}
		if strings.ContainsAny(name, ":/[] ") {
			return fmt.Errorf("public host %q must be a bare host name, without scheme or port", name)
		}
		*h = append(*h, name)
	}
	return nil
}

// aliasList is the repeatable --alias flag: NAME=MODEL pairs, several to a
// value when separated by commas.
type aliasList map[string]string

func (l *aliasList) String() string {
	var pairs []string
	for name, model := range *l {
		pairs = append(pairs, name+"="+model)
	}
	sort.Strings(pairs)
	return strings.Join(pairs, ",")
}

func (l *aliasList) Set(v string) error {
	if *l == nil {
		*l = aliasList{}
	}
	for _, pair := range strings.Split(v, ",") {
		pair = strings.TrimSpace(pair)
		if pair == "" {
			continue
		}
		name, model, ok := strings.Cut(pair, "=")
		name, model = strings.TrimSpace(name), strings.TrimSpace(model)
		switch {
		case !ok:
			return fmt.Errorf("alias %q must be NAME=MODEL", pair)
		case !api.ValidModelID(name) || !api.ValidModelID(model):
			return fmt.Errorf("alias %q: both names must be model ids (letters, digits, '.', '_' or '-')", pair)
		case name == model:
			return fmt.Errorf("alias %q names itself", pair)
		}
		if prev, dup := (*l)[name]; dup && prev != model {
			return fmt.Errorf("alias %s is given twice: %s and %s", name, prev, model)
		}
		(*l)[name] = model
	}
	return nil
}

// natsListenSafe refuses a NATS listener anyone could abuse. Whoever
// reaches an open NATS can dispatch work to every hive and write the keys
// bucket, which makes them admin: that holds for every local user on a
// loopback listener too, so any listener needs per-hive identities, and one
// beyond loopback needs TLS as well, so those identities' passwords do not
// cross the network in the clear. --insecure allows it all.
func (c Config) natsListenSafe() error {
	host, _, err := net.SplitHostPort(c.NATSListen)
	if err != nil || c.Insecure {
		return nil
	}
	switch {
	case loopbackHost(host) && c.NATSAuth == "":
		return fmt.Errorf("nats-listen %s lets every local user write to NATS: give hives their own identities with --nats-auth (from queen nats-config), or --insecure to allow it", c.NATSListen)
	case !loopbackHost(host) && (c.NATSAuth == "" || c.NATSCert == ""):
		return fmt.Errorf("nats-listen %s reaches beyond loopback: it needs per-hive identities (--nats-auth, from queen nats-config) and TLS (--nats-cert, --nats-key), or --insecure to allow it", c.NATSListen)
	}
	return nil
}

// loopbackHost reports whether a listen host only accepts local clients.
func loopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// minJobBudget is the smallest narration budget a job may be given.
const minJobBudget = 256 << 10
