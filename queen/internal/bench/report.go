package bench

import (
	"bytes"
	"debug/buildinfo"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Goal is a target a metric's median should meet.
type Goal struct {
	Op    string // "<", "<=", ">=" or "=="
	Value float64
}

// Met reports whether v meets the goal.
func (g Goal) Met(v float64) bool {
	switch g.Op {
	case "<":
		return v < g.Value
	case "<=":
		return v <= g.Value
	case ">=":
		return v >= g.Value
	}
	return v == g.Value
}

func (g Goal) String() string {
	op := map[string]string{"<": "<", "<=": "≤", ">=": "≥", "==": "="}[g.Op]
	return op + " " + formatNumber(g.Value, -1)
}

// Metric describes one row of a scenario's table.
type Metric struct {
	Key    string
	Label  string
	Digits int // decimals shown; -1 picks by magnitude
	Goal   *Goal
}

func lt(v float64) *Goal { return &Goal{"<", v} }
func le(v float64) *Goal { return &Goal{"<=", v} }
func ge(v float64) *Goal { return &Goal{">=", v} }
func zero() *Goal        { return &Goal{"==", 0} }
func metric(key, label string, digits int, g *Goal) Metric {
	return Metric{Key: key, Label: label, Digits: digits, Goal: g}
}

// Run is what one repetition of a scenario measured.
type Run struct {
	Values map[string]float64
	Tally  *Tally
	Notes  []string
}

func newRun() *Run { return &Run{Values: map[string]float64{}, Tally: &Tally{}} }

// Set records a value.
func (r *Run) Set(key string, v float64) { r.Values[key] = v }

// Note records a remark for the report.
func (r *Run) Note(format string, args ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
}

// SetUsage records CPU seconds of each process under prefix_<name>_cpu_s.
func (r *Run) SetUsage(prefix string, u map[string]Usage) {
	for name, us := range u {
		r.Set(prefix+name+"_cpu_s", us.CPU.Seconds())
	}
}

// SetTally records the stream verification counts.
func (r *Run) SetTally() {
	t := r.Tally
	t.mu.Lock()
	defer t.mu.Unlock()
	r.Set("streams", float64(t.Streams))
	r.Set("failed", float64(t.Failed))
	r.Set("lost", float64(t.Lost))
	r.Set("duplicated", float64(t.Duplicated))
	r.Set("out_of_order", float64(t.OutOfOrder))
}

// verifyMetrics are the rows every scenario that reads streams shows.
var verifyMetrics = []Metric{
	metric("streams", "streams verified", 0, nil),
	metric("lost", "events lost", 0, zero()),
	metric("duplicated", "events duplicated", 0, zero()),
	metric("out_of_order", "events out of order", 0, zero()),
	metric("failed", "streams with any problem", 0, zero()),
}

// ScenarioReport gathers the runs of one scenario.
type ScenarioReport struct {
	Name    string
	Title   string
	How     string
	Metrics []Metric
	Runs    []*Run
	Errors  []string
	Tally   Tally
}

// Median is the median of the metric over the runs that have it.
func (s *ScenarioReport) Median(key string) (float64, bool) {
	var vs []float64
	for _, r := range s.Runs {
		if v, ok := r.Values[key]; ok {
			vs = append(vs, v)
		}
	}
	if len(vs) == 0 {
		return 0, false
	}
	return Median(vs), true
}

// Worst is the largest value of the metric over the runs that have it.
func (s *ScenarioReport) Worst(key string) (float64, bool) {
	var w float64
	found := false
	for _, r := range s.Runs {
		if v, ok := r.Values[key]; ok && (!found || v > w) {
			w, found = v, true
		}
	}
	return w, found
}

// Failed reports whether any stream of the scenario was not whole or a run
// did not complete.
func (s *ScenarioReport) Failed() bool { return len(s.Errors) > 0 || !s.Tally.OK() }

// Report is the whole benchmark.
type Report struct {
	Started   time.Time
	Finished  time.Time
	Args      []string
	Cfg       Config
	Machine   Machine
	Scenarios []*ScenarioReport
	Notes     []string
}

// Machine describes where the benchmark ran.
type Machine struct {
	Arch      string
	Kernel    string
	CPUs      int
	CPUModel  string
	MemTotal  string
	GoBench   string
	GoBinary  string
	Revision  string
	NoFile    string
	Hostname  string
	BinaryDir string
}

// CollectMachine reads uname, /proc and the binaries' build information.
func CollectMachine(bin string) Machine {
	mc := Machine{CPUs: runtime.NumCPU(), GoBench: runtime.Version(), BinaryDir: bin}
	var u syscall.Utsname
	if syscall.Uname(&u) == nil {
		mc.Arch, mc.Kernel = utsString(u.Machine[:]), utsString(u.Release[:])
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				mc.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "MemTotal:") {
				mc.MemTotal = fmt.Sprintf("%.1f GiB", float64(kbField([]byte(line)))/(1<<30))
			}
		}
	}
	if bi, err := buildinfo.ReadFile(filepath.Join(bin, "queen")); err == nil {
		mc.GoBinary = bi.GoVersion
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				mc.Revision = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					mc.Revision += " (modified)"
				}
			}
		}
	}
	var rl syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) == nil {
		mc.NoFile = fmt.Sprintf("%d", rl.Cur)
	}
	return mc
}

func utsString[T int8 | uint8](b []T) string {
	var s []byte
	for _, c := range b {
		if c == 0 {
			break
		}
		s = append(s, byte(c))
	}
	return string(s)
}

// Markdown writes the report.
func (r *Report) Markdown(w io.Writer) error {
	var b bytes.Buffer
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p("# rbee benchmark report\n\n")
	p("`rbee-bench %s` — %s, %s.\n\n", strings.Join(r.Args, " "), r.Started.UTC().Format("2006-01-02 15:04 MST"),
		r.Finished.Sub(r.Started).Round(time.Second))
	mc := r.Machine
	p("| machine | |\n|---|---|\n")
	p("| CPU | %s × %d (`uname -m`: %s) |\n", orDash(mc.CPUModel), mc.CPUs, orDash(mc.Arch))
	p("| memory | %s |\n", orDash(mc.MemTotal))
	p("| kernel | Linux %s |\n", orDash(mc.Kernel))
	p("| Go | bench %s; queen built with %s |\n", mc.GoBench, orDash(mc.GoBinary))
	if mc.Revision != "" {
		p("| revision | %s |\n", mc.Revision)
	}
	p("| binaries | `%s` |\n", mc.BinaryDir)
	if len(r.Cfg.QueenFlags)+len(r.Cfg.HiveFlags) > 0 {
		p("| extra flags | queen `%s`, hive `%s` |\n", strings.Join(r.Cfg.QueenFlags, " "), strings.Join(r.Cfg.HiveFlags, " "))
	}
	p("| open files | %s |\n", orDash(mc.NoFile))
	p("| runs | %d per scenario, each on a fresh queen and hive; tables show the median (the worst run for counts that must be 0) |\n\n", r.Cfg.Runs)
	for _, n := range r.Notes {
		p("- %s\n", n)
	}
	if len(r.Notes) > 0 {
		p("\n")
	}

	p("## Summary\n\n| scenario | metric | goal | median | met |\n|---|---|---|---:|---|\n")
	for _, s := range r.Scenarios {
		for _, mt := range s.Metrics {
			if mt.Goal == nil || mt.Goal.Op == "==" {
				continue
			}
			v, ok := s.Median(mt.Key)
			p("| %s | %s | %s | %s | %s |\n", s.Name, mt.Label, mt.Goal, valueOrDash(v, ok, mt.Digits), met(mt.Goal, v, ok))
		}
		p("| %s | every stream whole (%d streams) | 0 lost, duplicated, out of order | %d / %d / %d | %s |\n",
			s.Name, s.Tally.Streams, s.Tally.Lost, s.Tally.Duplicated, s.Tally.OutOfOrder, yesNo(!s.Failed()))
	}
	p("\n")

	for _, s := range r.Scenarios {
		p("## %s: %s\n\n%s\n\n", s.Name, s.Title, s.How)
		if len(s.Runs) == 0 {
			p("No run completed.\n\n")
			for _, e := range s.Errors {
				p("- **error**: %s\n", e)
			}
			continue
		}
		p("| metric | median |")
		for i := range s.Runs {
			p(" run %d |", i+1)
		}
		p(" goal | met |\n|---|---:|")
		for range s.Runs {
			p("---:|")
		}
		p("---|---|\n")
		for _, mt := range s.Metrics {
			v, ok := s.Median(mt.Key)
			if !ok {
				continue
			}
			cell := formatNumber(v, mt.Digits)
			if mt.Goal != nil && mt.Goal.Op == "==" {
				// A failure in one run must not hide behind the median.
				v, _ = s.Worst(mt.Key)
				cell = formatNumber(v, mt.Digits) + " (worst)"
			}
			p("| %s | **%s** |", mt.Label, cell)
			for _, run := range s.Runs {
				rv, rok := run.Values[mt.Key]
				p(" %s |", valueOrDash(rv, rok, mt.Digits))
			}
			goal, mark := "", ""
			if mt.Goal != nil {
				goal, mark = mt.Goal.String(), met(mt.Goal, v, true)
			}
			p(" %s | %s |\n", goal, mark)
		}
		p("\n")
		var notes []string
		for i, run := range s.Runs {
			for _, n := range run.Notes {
				notes = append(notes, fmt.Sprintf("run %d: %s", i+1, n))
			}
		}
		for _, e := range s.Errors {
			notes = append(notes, "**error**: "+e)
		}
		for _, pr := range s.Tally.Problems {
			notes = append(notes, "**stream problem**: "+pr)
		}
		for _, n := range notes {
			p("- %s\n", n)
		}
		if len(notes) > 0 {
			p("\n")
		}
	}
	_, err := w.Write(b.Bytes())
	return err
}

func orDash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

func yesNo(ok bool) string {
	if ok {
		return "yes"
	}
	return "**NO**"
}

func met(g *Goal, v float64, ok bool) string {
	if !ok {
		return "—"
	}
	return yesNo(g.Met(v))
}

func valueOrDash(v float64, ok bool, digits int) string {
	if !ok {
		return "—"
	}
	return formatNumber(v, digits)
}

// formatNumber prints v with digits decimals, or with about three
// significant digits when digits is -1, grouping thousands.
func formatNumber(v float64, digits int) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "—"
	}
	if digits < 0 {
		switch a := math.Abs(v); {
		case a == 0 || a >= 100:
			digits = 0
		case a >= 10:
			digits = 1
		case a >= 1:
			digits = 2
		default:
			digits = 3
		}
	}
	s := fmt.Sprintf("%.*f", digits, v)
	intPart, frac, _ := strings.Cut(s, ".")
	neg := strings.HasPrefix(intPart, "-")
	intPart = strings.TrimPrefix(intPart, "-")
	var g []byte
	for i, c := range []byte(intPart) {
		if i > 0 && (len(intPart)-i)%3 == 0 {
			g = append(g, ',')
		}
		g = append(g, c)
	}
	out := string(g)
	if neg {
		out = "-" + out
	}
	if frac != "" {
		out += "." + frac
	}
	return out
}

// Median of vs (which it sorts).
func Median(vs []float64) float64 {
	if len(vs) == 0 {
		return math.NaN()
	}
	slices.Sort(vs)
	n := len(vs)
	if n%2 == 1 {
		return vs[n/2]
	}
	return (vs[n/2-1] + vs[n/2]) / 2
}

// Percentile is the q-quantile (0..1) of ds by the nearest-rank method;
// it sorts ds.
func Percentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	i := int(math.Ceil(q*float64(len(ds)))) - 1
	return ds[max(0, min(i, len(ds)-1))]
}

// ms is a duration in milliseconds.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// mib is a byte count in MiB.
func mib(b uint64) float64 { return float64(b) / (1 << 20) }

// latencyStats records p50, p99, max and mean of ds under prefix.
func (r *Run) latencyStats(prefix string, ds []time.Duration) {
	if len(ds) == 0 {
		return
	}
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	r.Set(prefix+"p50_ms", ms(Percentile(ds, 0.50)))
	r.Set(prefix+"p99_ms", ms(Percentile(ds, 0.99)))
	r.Set(prefix+"max_ms", ms(ds[len(ds)-1]))
	r.Set(prefix+"mean_ms", ms(sum/time.Duration(len(ds))))
}
