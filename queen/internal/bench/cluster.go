package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// HiveID is the id of the hive every scenario runs.
const HiveID = "bench"

// ClusterOptions shape the queen and hive a scenario runs against.
type ClusterOptions struct {
	// Slots is the hive's --slots.
	Slots int
	// AllowRun starts the hive with --allow-run, for blocker jobs.
	AllowRun bool
	// QueenFlags and HiveFlags are appended to the children's flags.
	QueenFlags, HiveFlags []string
	// AdminKey starts the queen with --admin-key, which turns API keys on;
	// the bench then sends it where it needs a key (Client.WithKey).
	AdminKey string
}

// Cluster is a queen with embedded NATS and one hive, each a child process
// of the real binaries, on free loopback ports.
type Cluster struct {
	// URL is the queen's HTTP base URL.
	URL string
	// NATSURL is where the queen's embedded NATS listens.
	NATSURL string
	// AdminKey is the queen's --admin-key, if it has one: the key the
	// bench sends (an existing cluster's: -token).
	AdminKey string
	// Queen and Hive are the children; both nil for an existing cluster,
	// which the bench measures through the queen's /metrics.
	Queen *Proc
	Hive  *Proc
	// Dir holds both data directories and the children's logs.
	Dir string
	// Idle is each process's memory after start-up and the settle time.
	IdleQueen, IdleHive Mem
	// QueenReady is how long the queen took to answer /readyz with 200;
	// HiveReady how long after that the queen listed the hive.
	QueenReady, HiveReady time.Duration

	keep bool
}

// StartCluster starts a queen, waits for /readyz, starts a hive, waits
// until the queen lists it, lets both settle and reads their idle memory.
// Ports are picked free just before use; a start that loses a port race is
// retried.
func StartCluster(ctx context.Context, bin string, o ClusterOptions, settle time.Duration, keep bool) (*Cluster, error) {
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		var c *Cluster
		c, err = startCluster(ctx, bin, o, settle, keep)
		if err == nil {
			return c, nil
		}
		if ctx.Err() != nil || !errors.Is(err, errPortRace) {
			return nil, err
		}
	}
	return nil, err
}

var errPortRace = errors.New("a port was taken between picking and binding it")

func startCluster(ctx context.Context, bin string, o ClusterOptions, settle time.Duration, keep bool) (_ *Cluster, err error) {
	dir, err := os.MkdirTemp("", "rbee-bench-")
	if err != nil {
		return nil, err
	}
	c := &Cluster{Dir: dir, AdminKey: o.AdminKey, keep: keep}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	httpAddr := "127.0.0.1:" + strconv.Itoa(ports[0])
	natsAddr := "127.0.0.1:" + strconv.Itoa(ports[1])
	c.URL, c.NATSURL = "http://"+httpAddr, "nats://"+natsAddr

	t0 := time.Now()
	qargs := []string{"--http-addr", httpAddr, "--data-dir", filepath.Join(dir, "queen"), "--nats-listen", natsAddr, "--insecure"}
	if o.AdminKey != "" {
		qargs = append(qargs, "--admin-key", o.AdminKey)
	}
	c.Queen, err = startProc("queen", filepath.Join(bin, "queen"), append(qargs, o.QueenFlags...), filepath.Join(dir, "queen.log"))
	if err != nil {
		return nil, err
	}
	if err := waitOK(ctx, c.URL+"/readyz", "", c.Queen, 60*time.Second); err != nil {
		return nil, err
	}
	c.QueenReady = time.Since(t0)

	t1 := time.Now()
	args := []string{"--id", HiveID, "--nats-url", c.NATSURL, "--data-dir", filepath.Join(dir, "hive"),
		"--slots", strconv.Itoa(max(o.Slots, 1))}
	if o.AllowRun {
		args = append(args, "--allow-run")
	}
	args = append(args, o.HiveFlags...)
	c.Hive, err = startProc("hive", filepath.Join(bin, "hive"), args, filepath.Join(dir, "hive.log"))
	if err != nil {
		return nil, err
	}
	if err := waitOK(ctx, c.URL+"/v1/hives/"+HiveID, o.AdminKey, c.Hive, 60*time.Second); err != nil {
		return nil, err
	}
	c.HiveReady = time.Since(t1)

	select {
	case <-time.After(settle):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	for _, p := range []*Proc{c.Queen, c.Hive} {
		if p.Exited() {
			return nil, p.exitError()
		}
	}
	c.IdleQueen, _ = ReadMem(c.Queen.Pid)
	c.IdleHive, _ = ReadMem(c.Hive.Pid)
	return c, nil
}

// ExistingCluster is the cluster cfg.Queen names: the bench starts none of
// its processes. Dir is the bench's own, for what a scenario adds to it.
func ExistingCluster(cfg Config) (*Cluster, error) {
	dir, err := os.MkdirTemp("", "rbee-bench-")
	if err != nil {
		return nil, err
	}
	return &Cluster{URL: strings.TrimRight(cfg.Queen, "/"), NATSURL: cfg.NATS, AdminKey: cfg.Token, Dir: dir, keep: cfg.Keep}, nil
}

// startExtraQueen starts queen number n (2, 3, ...) on the cluster's NATS,
// with the cluster's admin key if it has one, and returns it and its base
// URL once it is ready. Its data directory and log are queen<n> in the
// cluster's directory.
func startExtraQueen(ctx context.Context, e *Env, n int) (*Proc, string, error) {
	ports, err := freePorts(1)
	if err != nil {
		return nil, "", err
	}
	addr := "127.0.0.1:" + strconv.Itoa(ports[0])
	cl := e.Cluster
	name := "queen" + strconv.Itoa(n)
	args := []string{"--http-addr", addr, "--data-dir", filepath.Join(cl.Dir, name), "--nats-url", cl.NATSURL, "--insecure"}
	if cl.AdminKey != "" {
		args = append(args, "--admin-key", cl.AdminKey)
	}
	p, err := startProc(name, filepath.Join(e.Cfg.Bin, "queen"), append(args, e.Cfg.QueenFlags...), filepath.Join(cl.Dir, name+".log"))
	if err != nil {
		return nil, "", err
	}
	url := "http://" + addr
	if err := waitOK(ctx, url+"/readyz", "", p, 60*time.Second); err != nil {
		p.Stop(5 * time.Second)
		return nil, "", err
	}
	return p, url, nil
}

// Pids names the cluster's processes for a Meter; 0 is the bench itself.
func (c *Cluster) Pids() map[string]int {
	return map[string]int{"queen": c.Queen.Pid, "hive": c.Hive.Pid, "bench": 0}
}

// Check reports a child that died during a scenario. A child that exited
// but is not reaped yet counts as dead.
func (c *Cluster) Check() error {
	for _, p := range []*Proc{c.Queen, c.Hive} {
		if p == nil {
			continue
		}
		if !p.Exited() && !Alive(p.Pid) {
			select {
			case <-p.exited:
			case <-time.After(5 * time.Second):
			}
		}
		if p.Exited() {
			return p.exitError()
		}
	}
	return nil
}

// Watch cancels the returned context when a child dies or ctx ends, so a
// scenario stops at once rather than piling up failures against a dead
// queen. stop ends the watch.
func (c *Cluster) Watch(ctx context.Context) (context.Context, context.CancelFunc) {
	wctx, cancel := context.WithCancel(ctx)
	exited := func(p *Proc) <-chan struct{} {
		if p == nil {
			return nil // an existing cluster's: never
		}
		return p.exited
	}
	go func() {
		select {
		case <-exited(c.Queen):
		case <-exited(c.Hive):
		case <-wctx.Done():
		}
		cancel()
	}()
	return wctx, cancel
}

// Close stops the hive, then the queen, each with SIGTERM and after a grace
// time SIGKILL to its whole process group, and removes the data unless
// asked to keep it. It is safe to call more than once.
func (c *Cluster) Close() {
	if c.Hive != nil {
		c.Hive.Stop(5 * time.Second)
	}
	if c.Queen != nil {
		c.Queen.Stop(5 * time.Second)
	}
	if !c.keep && c.Dir != "" {
		_ = os.RemoveAll(c.Dir)
	}
}

// freePorts asks the kernel for n free loopback ports. They are free when
// this returns, not necessarily when the child binds them; a child that
// loses that race exits and the start is retried.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	var ports []int
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("pick a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// waitOK polls url, with API key key when set, until it answers 200, the
// process exits or the time is up.
func waitOK(ctx context.Context, url, key string, p *Proc, limit time.Duration) error {
	hc := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(limit)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := hc.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if p.Exited() {
			err := p.exitError()
			if strings.Contains(err.Error(), "address already in use") {
				return fmt.Errorf("%w: %v", errPortRace, err)
			}
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not answer 200 within %s; %s log:\n%s", url, limit, p.Name, p.LogTail())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// Proc is one child process.
type Proc struct {
	Name string
	Pid  int

	cmd     *exec.Cmd
	log     *os.File
	logPath string
	exited  chan struct{}
	err     error
	once    sync.Once
}

// live holds every child not yet stopped, so that an exit path that missed
// a Close still leaves no orphan behind.
var live = struct {
	sync.Mutex
	procs map[*Proc]struct{}
}{procs: map[*Proc]struct{}{}}

// StopAll stops every child still running.
func StopAll() {
	live.Lock()
	ps := make([]*Proc, 0, len(live.procs))
	for p := range live.procs {
		ps = append(ps, p)
	}
	live.Unlock()
	for _, p := range ps {
		p.Stop(2 * time.Second)
	}
}

// startProc starts a child in its own process group, so a terminal's
// Ctrl-C reaches only the bench, which then stops the children in order.
// Pdeathsig kills the child should the bench itself be killed.
func startProc(name, path string, args []string, logPath string) (*Proc, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = childEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Proc{Name: name, Pid: cmd.Process.Pid, cmd: cmd, log: f, logPath: logPath, exited: make(chan struct{})}
	live.Lock()
	live.procs[p] = struct{}{}
	live.Unlock()
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// childEnv is the bench's environment without QUEEN_* and HIVE_* settings,
// which would otherwise change the children's configuration.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "QUEEN_") || strings.HasPrefix(kv, "HIVE_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

func (p *Proc) exitError() error {
	<-p.exited
	how := "exit status 0"
	if p.err != nil {
		how = p.err.Error()
	}
	if p.err == nil || strings.Contains(how, "terminated") || strings.Contains(how, "interrupt") {
		// The bench sends no signal before it stops a cluster, and the
		// binaries exit 0 only on SIGTERM or SIGINT.
		how += ": it was stopped from outside the bench (SIGTERM or SIGINT)"
	}
	return fmt.Errorf("%s (pid %d) exited during the run (%s); its log ends:\n%s", p.Name, p.Pid, how, p.LogTail())
}

// LogTail is the end of the process's log.
func (p *Proc) LogTail() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return ""
	}
	if len(b) > 2048 {
		b = b[len(b)-2048:]
	}
	return string(b)
}

// Stop ends the process: SIGTERM, then after grace SIGKILL. Whatever is
// left in its process group is killed too. It is safe to call again.
func (p *Proc) Stop(grace time.Duration) {
	p.once.Do(func() {
		if !p.Exited() {
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.exited:
			case <-time.After(grace):
				_ = syscall.Kill(-p.Pid, syscall.SIGKILL)
				<-p.exited
			}
		}
		_ = syscall.Kill(-p.Pid, syscall.SIGKILL)
		_ = p.log.Close()
		live.Lock()
		delete(live.procs, p)
		live.Unlock()
	})
}
