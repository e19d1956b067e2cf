package bench

import (
	"flag"
	"fmt"
	"io"
	"maps"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/go-multierror"
)

// Config is everything rbee-bench is told.
type Config struct {
	Bin        string
	Scenarios  []string
	Runs       int
	Quick      bool
	Out        string
	Keep       bool
	Settle     time.Duration
	Seed       uint64
	Verbose    bool
	CPUProfile string
	// QueenFlags and HiveFlags are passed to every queen and hive as well,
	// to try a setting (say --sse-buffer) without changing the bench.
	QueenFlags []string
	HiveFlags  []string
	// Queen, when set, is an existing cluster's queen: the scenarios that
	// can (hives) run against it and its NATS server instead of starting
	// a queen and hive of their own. Token is the API key sent to it.
	Queen, NATS, Token string

	RoundtripJobs  int
	RoundtripSlots int
	Rate           int
	RateFor        time.Duration

	ThroughputEvents int
	BaselineMsgs     int
	Payload          int

	FanoutJobs      int
	FanoutClients   int
	FanoutEvents    int
	FanoutSlots     int
	ConnectParallel int

	SustainedFor     time.Duration
	SustainedWorkers int
	SustainedSlots   int

	ChaosClients     int
	ChaosJobs        int
	ChaosEvents      int
	ChaosSlots       int
	ChaosResumeAtEnd float64

	InferClients   int
	InferTokens    int
	InferFor       time.Duration
	InferTokenRate float64

	QueueClients   int
	QueueTokens    int
	QueueFor       time.Duration
	QueueTokenRate float64

	BacklogJobs int
	DrainHives  int

	Hives    int
	HiveWork time.Duration
	HiveJobs int

	QueensJobs   int
	QueensEvents int

	IdleFor time.Duration

	// QuietWait is how long a run waits for other processes to calm down
	// before it starts; QuietCores is what counts as calm.
	QuietWait  time.Duration
	QuietCores float64
}

// againstCluster lists the scenarios that can run against an existing
// cluster (-queen): they add their own hives and touch nothing else.
var againstCluster = []string{"hives"}

// ScenarioNames lists the scenarios in the order they run.
var ScenarioNames = []string{"idle", "roundtrip", "throughput", "fanout", "sustained", "chaos", "infer", "queue", "durability", "backlog", "hives", "queens"}

// DefaultConfig is the full benchmark as BENCHMARKS.md records it.
func DefaultConfig() Config {
	return Config{
		Bin:       "bin",
		Scenarios: ScenarioNames,
		Runs:      3,
		Settle:    2 * time.Second,
		Seed:      1,

		RoundtripJobs:  1000,
		RoundtripSlots: 32,
		Rate:           500,
		RateFor:        5 * time.Second,

		ThroughputEvents: 1_000_000,
		Payload:          100,

		FanoutJobs:      1000,
		FanoutClients:   10,
		FanoutEvents:    100,
		FanoutSlots:     4,
		ConnectParallel: 256,

		SustainedFor:     10 * time.Second,
		SustainedWorkers: 32,
		SustainedSlots:   32,

		ChaosClients:     200,
		ChaosJobs:        20,
		ChaosEvents:      200,
		ChaosSlots:       32,
		ChaosResumeAtEnd: 0.05,

		InferClients:   32,
		InferTokens:    64,
		InferFor:       5 * time.Second,
		InferTokenRate: 100,

		// 16 tokens at 200/s: about 80 ms a request, one at a time.
		QueueClients:   8,
		QueueTokens:    16,
		QueueFor:       20 * time.Second,
		QueueTokenRate: 200,

		BacklogJobs: 100_000,
		DrainHives:  100,

		Hives:    1000,
		HiveWork: 10 * time.Millisecond,
		HiveJobs: 5000,

		// 200,000 events a phase, as in the fanout scenario's 1,000 jobs × 100
		// but in fewer, longer streams, so narration dominates the traffic.
		QueensJobs:   40,
		QueensEvents: 5000,

		IdleFor: 5 * time.Second,

		QuietWait:  60 * time.Second,
		QuietCores: 0.25,
	}
}

// quick scales a config down to a smoke run of a minute or two.
func (c *Config) quick(set map[string]bool) {
	scale := func(name string, p *int, v int) {
		if !set[name] {
			*p = v
		}
	}
	scaleD := func(name string, p *time.Duration, v time.Duration) {
		if !set[name] {
			*p = v
		}
	}
	scale("roundtrip-jobs", &c.RoundtripJobs, 200)
	scaleD("rate-for", &c.RateFor, 2*time.Second)
	scale("throughput-events", &c.ThroughputEvents, 100_000)
	scale("fanout-jobs", &c.FanoutJobs, 100)
	scaleD("sustained-for", &c.SustainedFor, 3*time.Second)
	scale("chaos-clients", &c.ChaosClients, 50)
	scale("chaos-jobs", &c.ChaosJobs, 5)
	scaleD("idle-for", &c.IdleFor, 2*time.Second)
	scaleD("infer-for", &c.InferFor, 2*time.Second)
	scaleD("queue-for", &c.QueueFor, 4*time.Second)
	scale("backlog-jobs", &c.BacklogJobs, 3000)
	scale("drain-hives", &c.DrainHives, 20)
	scale("hives", &c.Hives, 100)
	scale("hive-jobs", &c.HiveJobs, 500)
	scale("queens-jobs", &c.QueensJobs, 8)
	scale("queens-events", &c.QueensEvents, 2000)
	scale("runs", &c.Runs, 1)
	scaleD("quiet-wait", &c.QuietWait, 5*time.Second)
}

// ParseConfig reads the command line.
func ParseConfig(args []string, stderr io.Writer) (Config, error) {
	c := DefaultConfig()
	fs := flag.NewFlagSet("rbee-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "rbee-bench drives real queen and hive binaries and reports latency, throughput,\n"+
			"memory and CPU as Markdown on stdout. Every stream is verified event by event.\n\n"+
			"usage: rbee-bench [-bin DIR] [-scenarios %s] [-runs N] [-quick] [-out FILE]\n\n", strings.Join(ScenarioNames, ","))
		fs.PrintDefaults()
	}
	var scen, queenFlags, hiveFlags string
	fs.StringVar(&c.Bin, "bin", c.Bin, "directory holding the queen and hive binaries")
	fs.StringVar(&scen, "scenarios", "all", "comma-separated scenarios to run: all or "+strings.Join(ScenarioNames, ","))
	fs.IntVar(&c.Runs, "runs", c.Runs, "repetitions of each scenario, each on a fresh queen and hive; the median is reported")
	fs.BoolVar(&c.Quick, "quick", false, "scale every scenario down (and -runs to 1) unless set explicitly")
	fs.StringVar(&c.Out, "out", "", "also write the report to this file")
	fs.BoolVar(&c.Keep, "keep", false, "keep the children's data directories and logs")
	fs.DurationVar(&c.Settle, "settle", c.Settle, "wait after start-up before reading idle memory")
	fs.Uint64Var(&c.Seed, "seed", c.Seed, "seed of the chaos scenario's random disconnects")
	fs.BoolVar(&c.Verbose, "v", false, "more progress on stderr")
	fs.StringVar(&c.CPUProfile, "cpuprofile", "", "write a CPU profile of the bench process itself to this file")
	fs.StringVar(&queenFlags, "queen-flags", "", "extra flags for every queen, space-separated, e.g. \"--sse-buffer 64\"")
	fs.StringVar(&hiveFlags, "hive-flags", "", "extra flags for every hive, space-separated")
	fs.StringVar(&c.Queen, "queen", "", "base URL of an existing cluster's queen: the hives scenario runs against it (with -nats) instead of starting a cluster")
	fs.StringVar(&c.NATS, "nats", "", "with -queen: the NATS URL the simulated hives connect to; their credentials go in -hive-flags (e.g. \"--nats-user queen --nats-password-file F --nats-ca ca.pem\")")
	fs.StringVar(&c.Token, "token", "", "with -queen: the API key sent to it (env RBEE_TOKEN)")

	fs.IntVar(&c.RoundtripJobs, "roundtrip-jobs", c.RoundtripJobs, "roundtrip: sequential jobs")
	fs.IntVar(&c.RoundtripSlots, "roundtrip-slots", c.RoundtripSlots, "roundtrip: hive slots")
	fs.IntVar(&c.Rate, "rate", c.Rate, "roundtrip: jobs per second of the open-loop variant")
	fs.DurationVar(&c.RateFor, "rate-for", c.RateFor, "roundtrip: duration of the open-loop variant")

	fs.IntVar(&c.ThroughputEvents, "throughput-events", c.ThroughputEvents, "throughput: events of the one job")
	fs.IntVar(&c.BaselineMsgs, "baseline-msgs", 0, "throughput: messages of the raw JetStream baseline (0: as many as the job's events)")
	fs.IntVar(&c.Payload, "payload", c.Payload, "throughput: payload_bytes of each event")

	fs.IntVar(&c.FanoutJobs, "fanout-jobs", c.FanoutJobs, "fanout: jobs")
	fs.IntVar(&c.FanoutClients, "fanout-clients", c.FanoutClients, "fanout: SSE clients per job")
	fs.IntVar(&c.FanoutEvents, "fanout-events", c.FanoutEvents, "fanout: events per job")
	fs.IntVar(&c.FanoutSlots, "fanout-slots", c.FanoutSlots, "fanout: hive slots (each held by a blocker job until all clients are connected)")
	fs.IntVar(&c.ConnectParallel, "connect-parallel", c.ConnectParallel, "fanout: SSE connections being opened at once")

	fs.DurationVar(&c.SustainedFor, "sustained-for", c.SustainedFor, "sustained: duration")
	fs.IntVar(&c.SustainedWorkers, "sustained-workers", c.SustainedWorkers, "sustained: concurrent submitters")
	fs.IntVar(&c.SustainedSlots, "sustained-slots", c.SustainedSlots, "sustained: hive slots")

	fs.IntVar(&c.ChaosClients, "chaos-clients", c.ChaosClients, "chaos: concurrent clients")
	fs.IntVar(&c.ChaosJobs, "chaos-jobs", c.ChaosJobs, "chaos: jobs each client submits and follows")
	fs.IntVar(&c.ChaosEvents, "chaos-events", c.ChaosEvents, "chaos: most events of one job (each job has 20 to this many)")
	fs.IntVar(&c.ChaosSlots, "chaos-slots", c.ChaosSlots, "chaos: hive slots")
	fs.Float64Var(&c.ChaosResumeAtEnd, "chaos-resume-at-end", c.ChaosResumeAtEnd, "chaos: share of streams that hang up right after the end event and resume from it")

	fs.IntVar(&c.InferClients, "infer-clients", c.InferClients, "infer: concurrent streams of the many-clients part")
	fs.IntVar(&c.InferTokens, "infer-tokens", c.InferTokens, "infer: max_tokens of each request")
	fs.DurationVar(&c.InferFor, "infer-for", c.InferFor, "infer: duration of each load phase")
	fs.IntVar(&c.QueueClients, "queue-clients", c.QueueClients, "queue: clients looping requests, split over two keys and two queens")
	fs.IntVar(&c.QueueTokens, "queue-tokens", c.QueueTokens, "queue: max_tokens of each request")
	fs.DurationVar(&c.QueueFor, "queue-for", c.QueueFor, "queue: duration of the load")
	fs.Float64Var(&c.QueueTokenRate, "queue-token-rate", c.QueueTokenRate, "queue: the one-slot worker's tokens per second (0: as fast as it can)")
	fs.IntVar(&c.Hives, "hives", c.Hives, "hives: simulated hives")
	fs.DurationVar(&c.HiveWork, "hive-work", c.HiveWork, "hives: each job's work on a simulated hive")
	fs.IntVar(&c.HiveJobs, "hive-jobs", c.HiveJobs, "hives: jobs sent across the simulated hives")
	fs.IntVar(&c.QueensJobs, "queens-jobs", c.QueensJobs, "queens: hive_check jobs of each phase (1, 2, 3 queens)")
	fs.IntVar(&c.QueensEvents, "queens-events", c.QueensEvents, "queens: events of each job")
	fs.IntVar(&c.BacklogJobs, "backlog-jobs", c.BacklogJobs, "backlog: jobs queued for a label no hive carries")
	fs.IntVar(&c.DrainHives, "drain-hives", c.DrainHives, "backlog: simulated hives that join to drain the backlog (work: -hive-work)")
	fs.Float64Var(&c.InferTokenRate, "infer-token-rate", c.InferTokenRate, "infer: the reference worker's tokens per second per stream (0: as fast as it can)")

	fs.DurationVar(&c.IdleFor, "idle-for", c.IdleFor, "idle: window over which idle CPU is measured")
	fs.DurationVar(&c.QuietWait, "quiet-wait", c.QuietWait, "before each run, wait up to this long for other processes to use less than -quiet-cores (0: do not wait)")
	fs.Float64Var(&c.QuietCores, "quiet-cores", c.QuietCores, "cores other processes may keep busy for a run to start at once")

	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if c.Quick {
		c.quick(set)
	}
	c.QueenFlags, c.HiveFlags = strings.Fields(queenFlags), strings.Fields(hiveFlags)
	if c.Token == "" {
		c.Token = os.Getenv("RBEE_TOKEN")
	}
	if c.BaselineMsgs == 0 {
		c.BaselineMsgs = c.ThroughputEvents
	}
	c.Scenarios = nil
	for _, s := range strings.Split(scen, ",") {
		s = strings.TrimSpace(s)
		switch {
		case s == "all":
			c.Scenarios = append(c.Scenarios, ScenarioNames...)
		case s != "":
			c.Scenarios = append(c.Scenarios, s)
		}
	}
	if c.Queen != "" && !set["scenarios"] {
		c.Scenarios = againstCluster
	}
	return c, c.Validate()
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs *multierror.Error
	add := func(format string, args ...any) { errs = multierror.Append(errs, fmt.Errorf(format, args...)) }
	if len(c.Scenarios) == 0 {
		add("no scenario to run")
	}
	if c.Queen != "" || c.NATS != "" {
		if u, err := url.Parse(c.Queen); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			add("-queen must be the queen's http:// or https:// base URL, given with -nats")
		}
		if u, err := url.Parse(c.NATS); err != nil || u.Host == "" {
			add("-nats must be the NATS URL the simulated hives connect to, given with -queen")
		}
		for _, s := range c.Scenarios {
			if !slices.Contains(againstCluster, s) {
				add("-queen: scenario %s starts its own cluster; against an existing one only %s run", s, strings.Join(againstCluster, ", "))
			}
		}
	}
	for _, s := range c.Scenarios {
		if !slices.Contains(ScenarioNames, s) {
			add("unknown scenario %q (known: %s)", s, strings.Join(ScenarioNames, ", "))
		}
	}
	positive := map[string]int{
		"runs": c.Runs, "roundtrip-jobs": c.RoundtripJobs, "roundtrip-slots": c.RoundtripSlots, "rate": c.Rate, "throughput-events": c.ThroughputEvents,
		"baseline-msgs": c.BaselineMsgs, "fanout-jobs": c.FanoutJobs, "fanout-clients": c.FanoutClients,
		"fanout-slots": c.FanoutSlots, "connect-parallel": c.ConnectParallel, "sustained-workers": c.SustainedWorkers,
		"sustained-slots": c.SustainedSlots, "chaos-clients": c.ChaosClients, "chaos-jobs": c.ChaosJobs,
		"chaos-slots": c.ChaosSlots, "backlog-jobs": c.BacklogJobs, "drain-hives": c.DrainHives, "hives": c.Hives, "hive-jobs": c.HiveJobs, "queens-jobs": c.QueensJobs, "queens-events": c.QueensEvents, "infer-clients": c.InferClients, "infer-tokens": c.InferTokens,
		"queue-tokens": c.QueueTokens,
	}
	for _, name := range slices.Sorted(maps.Keys(positive)) {
		if positive[name] < 1 {
			add("-%s must be at least 1", name)
		}
	}
	if c.Payload < 0 || c.Payload > 64<<10 {
		add("-payload must be between 0 and 65536")
	}
	if c.FanoutEvents < 0 || c.ChaosEvents < 20 {
		add("-fanout-events must not be negative and -chaos-events must be at least 20")
	}
	if c.ChaosResumeAtEnd < 0 || c.ChaosResumeAtEnd > 1 {
		add("-chaos-resume-at-end must be between 0 and 1")
	}
	for name, d := range map[string]time.Duration{"rate-for": c.RateFor, "sustained-for": c.SustainedFor, "idle-for": c.IdleFor, "infer-for": c.InferFor, "queue-for": c.QueueFor} {
		if d <= 0 {
			add("-%s must be positive", name)
		}
	}
	if c.InferTokenRate < 0 || c.QueueTokenRate < 0 {
		add("-infer-token-rate and -queue-token-rate must not be negative")
	}
	if c.QueueClients < 2 {
		add("-queue-clients must be at least 2: one per key")
	}
	if c.QuietWait < 0 || c.QuietCores < 0 {
		add("-quiet-wait and -quiet-cores must not be negative")
	}
	if c.Settle < 0 {
		add("-settle must not be negative")
	}
	return errs.ErrorOrNil()
}
