// Package bench is rbee-bench: a load generator that drives the real queen
// and hive binaries as child processes on loopback ports and measures what
// a user would see: job round trips, narration throughput against raw
// JetStream, SSE fan-out memory, sustained job rate, idle cost, and whole
// streams under random disconnects. Every SSE stream it reads is verified
// event by event; a lost, repeated or reordered event fails the run.
package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"syscall"
	"time"
)

// Exit codes of Main.
const (
	ExitOK          = 0
	ExitFailed      = 1 // a stream was not whole or a scenario failed
	ExitUsage       = 2
	ExitInterrupted = 130
)

// Env is what a scenario run works with.
type Env struct {
	Cfg     Config
	Cluster *Cluster
	// Run is the repetition number, from 1.
	Run int
	log func(format string, args ...any)
}

// Logf prints progress to stderr.
func (e *Env) Logf(format string, args ...any) { e.log(format, args...) }

// scenario is one benchmark.
type scenario struct {
	name    string
	title   string
	how     func(Config) string
	cluster func(Config) ClusterOptions
	metrics []Metric
	run     func(ctx context.Context, e *Env) (*Run, error)
}

func scenarios() map[string]scenario {
	all := map[string]scenario{
		"idle":       idleScenario,
		"roundtrip":  roundtripScenario,
		"throughput": throughputScenario,
		"fanout":     fanoutScenario,
		"sustained":  sustainedScenario,
		"chaos":      chaosScenario,
		"infer":      inferScenario,
		"queue":      queueScenario,
		"durability": durabilityScenario,
		"backlog":    backlogScenario,
		"hives":      hivesScenario,
		"queens":     queensScenario,
	}
	noise := map[string]string{
		"idle": "others_cpu_s", "roundtrip": "seq_others_cpu_s", "throughput": "job_others_cpu_s",
		"fanout": "deliver_others_cpu_s", "sustained": "others_cpu_s", "chaos": "others_cpu_s",
		"infer": "cn_others_cpu_s", "queue": "others_cpu_s", "durability": "others_cpu_s", "backlog": "others_cpu_s", "hives": "others_cpu_s",
		"queens": "others_cpu_s",
	}
	for name, sc := range all {
		sc.metrics = append(slices.Clip(sc.metrics), noiseMetrics(noise[name])...)
		all[name] = sc
	}
	return all
}

// Main runs rbee-bench with args and returns the process exit code. The
// report goes to stdout (and -out), progress to stderr. Every child is
// stopped before it returns, whatever happened.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, err := ParseConfig(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return ExitOK
	}
	if err != nil {
		fmt.Fprintln(stderr, "rbee-bench:", err)
		return ExitUsage
	}
	defer StopAll()
	logf := func(format string, args ...any) {
		fmt.Fprintf(stderr, "%s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
	}

	if cfg.Bin, err = filepath.Abs(cfg.Bin); err != nil {
		fmt.Fprintln(stderr, "rbee-bench:", err)
		return ExitUsage
	}
	for _, b := range []string{"queen", "hive"} {
		if b == "queen" && cfg.Queen != "" {
			continue // the cluster's own
		}
		if fi, err := os.Stat(filepath.Join(cfg.Bin, b)); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			fmt.Fprintf(stderr, "rbee-bench: no %s binary in %s (run make build)\n", b, cfg.Bin)
			return ExitUsage
		}
	}
	if cfg.CPUProfile != "" {
		f, err := os.Create(cfg.CPUProfile)
		if err != nil {
			fmt.Fprintln(stderr, "rbee-bench:", err)
			return ExitUsage
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(stderr, "rbee-bench:", err)
			return ExitUsage
		}
		defer pprof.StopCPUProfile()
	}

	rep := &Report{Started: time.Now(), Args: args, Cfg: cfg}
	if n, err := RaiseNoFile(); err != nil {
		rep.Notes = append(rep.Notes, fmt.Sprintf("could not raise the open-file limit (%v); it is %d", err, n))
	}
	rep.Machine = CollectMachine(cfg.Bin)
	if cfg.Quick {
		rep.Notes = append(rep.Notes, "-quick: every scenario is scaled down; numbers are a smoke test, not the benchmark")
	}

	all := scenarios()
	for _, name := range ScenarioNames {
		if !slices.Contains(cfg.Scenarios, name) {
			continue
		}
		sc := all[name]
		sr := &ScenarioReport{Name: sc.name, Title: sc.title, How: sc.how(cfg), Metrics: sc.metrics}
		rep.Scenarios = append(rep.Scenarios, sr)
		for i := 1; i <= cfg.Runs && ctx.Err() == nil; i++ {
			logf("%s: run %d of %d", name, i, cfg.Runs)
			run, err := runOnce(ctx, sc, cfg, i, logf)
			if err != nil {
				if ctx.Err() != nil {
					break
				}
				logf("%s: run %d failed: %v", name, i, err)
				sr.Errors = append(sr.Errors, fmt.Sprintf("run %d: %v", i, err))
			}
			if run != nil {
				sr.Runs = append(sr.Runs, run)
				sr.Tally.Merge(run.Tally)
				if !run.Tally.OK() {
					logf("%s: run %d: streams not whole: %d failed, %d lost, %d duplicated, %d out of order",
						name, i, run.Tally.Failed, run.Tally.Lost, run.Tally.Duplicated, run.Tally.OutOfOrder)
				}
			}
		}
	}
	rep.Finished = time.Now()
	if ctx.Err() != nil {
		rep.Notes = append(rep.Notes, "interrupted: the report holds only the runs that completed")
	}

	code := ExitOK
	for _, s := range rep.Scenarios {
		if s.Failed() {
			code = ExitFailed
		}
	}
	if err := rep.Markdown(stdout); err != nil {
		code = ExitFailed
	}
	if cfg.Out != "" {
		f, err := os.Create(cfg.Out)
		if err == nil {
			err = rep.Markdown(f)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
		if err != nil {
			fmt.Fprintln(stderr, "rbee-bench: write report:", err)
			code = ExitFailed
		}
	}
	if ctx.Err() != nil {
		return ExitInterrupted
	}
	if code != ExitOK {
		logf("some streams were not whole or a scenario failed; see the report")
	}
	return code
}

// runOnce runs one repetition of a scenario on a fresh cluster.
func runOnce(ctx context.Context, sc scenario, cfg Config, i int, logf func(string, ...any)) (*Run, error) {
	load, err := waitQuiet(ctx, cfg.QuietWait, cfg.QuietCores)
	if err != nil {
		return nil, err
	}
	if load >= cfg.QuietCores && cfg.QuietWait > 0 {
		logf("%s: other processes keep %.2f cores busy; running anyway", sc.name, load)
	}
	var cl *Cluster
	if cfg.Queen != "" {
		cl, err = ExistingCluster(cfg)
	} else {
		co := sc.cluster(cfg)
		co.QueenFlags, co.HiveFlags = append(co.QueenFlags, cfg.QueenFlags...), append(co.HiveFlags, cfg.HiveFlags...)
		cl, err = StartCluster(ctx, cfg.Bin, co, cfg.Settle, cfg.Keep)
	}
	if err != nil {
		return nil, fmt.Errorf("start cluster: %w", err)
	}
	defer cl.Close()
	if cfg.Keep {
		logf("%s: data and logs in %s", sc.name, cl.Dir)
	}
	own := cl.Queen != nil
	if own {
		// Peaks are of the scenario, not of start-up.
		_ = ResetPeak(cl.Queen.Pid)
		_ = ResetPeak(cl.Hive.Pid)
	}
	e := &Env{Cfg: cfg, Cluster: cl, Run: i, log: func(format string, args ...any) {
		logf("%s: "+format, append([]any{sc.name}, args...)...)
	}}
	sctx, stop := cl.Watch(ctx)
	run, err := sc.run(sctx, e)
	stop()
	if run != nil && own {
		qm, _ := ReadMem(cl.Queen.Pid)
		hm, _ := ReadMem(cl.Hive.Pid)
		run.Set("queen_peak_mib", mib(qm.Peak))
		run.Set("hive_peak_mib", mib(hm.Peak))
		run.Set("queen_idle_mib", mib(cl.IdleQueen.RSS))
		run.Set("hive_idle_mib", mib(cl.IdleHive.RSS))
	}
	if run != nil {
		run.SetTally()
		run.Set("background_cores", load)
	}
	if cerr := cl.Check(); cerr != nil {
		err = cerr
	}
	return run, err
}

// waitQuiet measures, second by second, the CPU the machine's processes
// use (no child of the bench runs now) until it is under cores or limit has
// passed, and returns the last measurement in cores. On a machine shared
// with builds and tests this keeps most runs clear of them, and the report
// says when it could not.
func waitQuiet(ctx context.Context, limit time.Duration, cores float64) (float64, error) {
	deadline := time.Now().Add(limit)
	for {
		m0, err := MachineCPU()
		if err != nil {
			return 0, nil
		}
		t0 := time.Now()
		if err := sleepCtx(ctx, time.Second); err != nil {
			return 0, err
		}
		m1, _ := MachineCPU()
		load := (m1 - m0).Seconds() / time.Since(t0).Seconds()
		if load < cores || !time.Now().Before(deadline) {
			return load, nil
		}
	}
}

// noiseMetrics are the rows that tell how much other processes disturbed
// a scenario; key is its "others" CPU key.
func noiseMetrics(key string) []Metric {
	return []Metric{
		metric(key, "other processes' CPU meanwhile (s)", 2, nil),
		metric("background_cores", "other processes' load before the run (cores)", 2, nil),
	}
}

// RaiseNoFile lifts the open-file soft limit to the hard limit. Children
// inherit it, so the queen can hold as many connections as the bench opens.
func RaiseNoFile() (uint64, error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, err
	}
	if rl.Cur >= rl.Max {
		return rl.Cur, nil
	}
	rl.Cur = rl.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return rl.Cur, err
	}
	return rl.Cur, nil
}

// perfMetrics are the resource rows most scenarios show.
func perfMetrics(cpuPrefix string) []Metric {
	return []Metric{
		metric(cpuPrefix+"queen_cpu_s", "queen CPU (s)", 2, nil),
		metric(cpuPrefix+"hive_cpu_s", "hive CPU (s)", 2, nil),
		metric(cpuPrefix+"bench_cpu_s", "bench CPU (s)", 2, nil),
		metric("queen_peak_mib", "queen peak RSS (MiB)", 1, nil),
		metric("hive_peak_mib", "hive peak RSS (MiB)", 1, nil),
	}
}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
