//go:build e2e

package e2e_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"rbee.dev/queen/internal/client"
	"rbee.dev/shared/api"
	"rbee.dev/shared/testkit"
)

// services are the compose services the suite starts.
var services = []string{"n1", "n2", "n3", "q1", "q2", "hive1", "hive2"}

// hiveTTL is the queens' --hive-ttl in the suite: short, so that a lost
// hive is noticed in seconds rather than the default 15.
const hiveTTL = 6 * time.Second

// cluster is one docker-compose project of docker-compose.yml.
type cluster struct {
	t       testing.TB
	root    string
	compose []string
	project string
	env     []string
	token   string
	queens  []queen
	// natsURL reaches n1 from the host.
	natsURL string
	// ids are the containers of the services, which keep their ids
	// through kill, start and restart.
	ids map[string]string
	// jobs is every job the suite created, for the final audit.
	jobs ledger
}

// queen is one queen as the host reaches it.
type queen struct {
	name string // the compose service
	url  string
	cl   *client.Client
}

// startCluster brings the cluster up under a project name of its own and
// waits until both queens are ready and see both hives. Everything it
// started, volumes included, is removed when the test ends, failed or not.
func startCluster(t *testing.T) *cluster {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, root: root, compose: composeCommand(t), project: os.Getenv("RBEE_E2E_PROJECT"), token: randomHex(24)}
	if c.project == "" {
		c.project = "rbee-e2e-" + randomHex(4)
	}
	for _, img := range []string{"rbee/queen:dev", "rbee/hive:dev", "rbee/nats:dev"} {
		if out, err := exec.Command("docker", "image", "inspect", "--format", "{{.Id}}", img).CombinedOutput(); err != nil {
			t.Fatalf("image %s is missing (make images builds it): %v\n%s", img, err, out)
		}
	}
	ticker := buildTicker(t)
	ports := testkit.FreePorts(t, 3)
	q1, q2, natsPort := ports[0], ports[1], ports[2]
	c.natsURL = fmt.Sprintf("nats://127.0.0.1:%d", natsPort)
	c.env = append(os.Environ(),
		"RBEE_ADMIN_KEY="+c.token,
		"RBEE_BIND=127.0.0.1",
		"RBEE_QUEEN1_PORT="+strconv.Itoa(q1),
		"RBEE_QUEEN2_PORT="+strconv.Itoa(q2),
		"RBEE_NATS_PORT="+strconv.Itoa(natsPort),
		"RBEE_HIVE_TTL="+hiveTTL.String(),
		"RBEE_E2E_TICKER="+ticker,
	)
	for i, port := range []int{q1, q2} {
		url := fmt.Sprintf("http://127.0.0.1:%d", port)
		cl := client.New(url, c.token, nil)
		// Failures are the point here: reconnect fast, and notice a
		// dead connection well before the default 45 s.
		cl.MaxBackoff = 500 * time.Millisecond
		cl.IdleTimeout = 20 * time.Second
		cl.RequestTimeout = 10 * time.Second
		c.queens = append(c.queens, queen{name: fmt.Sprintf("q%d", i+1), url: url, cl: cl})
	}

	t.Cleanup(c.down)
	start := time.Now()
	c.mustCompose(t, "up", "-d")
	c.ids = map[string]string{}
	for _, svc := range services {
		c.ids[svc] = c.container(t, svc)
	}
	c.waitReady(t, 3*time.Minute, "hive1", "hive2")
	t.Logf("cluster %s up in %s: q1 %s, q2 %s", c.project, time.Since(start).Round(time.Second), c.queens[0].url, c.queens[1].url)
	return c
}

// composeCommand is RBEE_COMPOSE, else "docker compose" where the plugin
// is installed, else Debian's docker-compose.
func composeCommand(t testing.TB) []string {
	t.Helper()
	if v := strings.Fields(os.Getenv("RBEE_COMPOSE")); len(v) > 0 {
		return v
	}
	if exec.Command("docker", "compose", "version").Run() == nil {
		return []string{"docker", "compose"}
	}
	if _, err := exec.LookPath("docker-compose"); err == nil {
		return []string{"docker-compose"}
	}
	t.Fatal("neither `docker compose` nor docker-compose is installed")
	return nil
}

// buildTicker builds the ticker command statically for the hive containers.
func buildTicker(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	// The directory is bind-mounted from; the container's user must be
	// able to run the file.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "ticker")
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, "rbee.dev/queen/e2e/ticker")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build ticker: %v\n%s", err, b)
	}
	return out
}

func (c *cluster) composeArgs(args ...string) []string {
	base := append([]string{}, c.compose[1:]...)
	base = append(base, "-p", c.project,
		"-f", filepath.Join(c.root, "docker-compose.yml"),
		"-f", filepath.Join(c.root, "queen", "e2e", "compose.e2e.yml"),
		"--project-directory", c.root)
	return append(base, args...)
}

// runCompose runs a compose command and returns its combined output.
func (c *cluster) runCompose(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.compose[0], c.composeArgs(args...)...)
	cmd.Env = c.env
	cmd.Dir = c.root
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w", strings.Join(c.compose, " "), strings.Join(args, " "), err)
	}
	return string(out), nil
}

func (c *cluster) mustCompose(t testing.TB, args ...string) string {
	t.Helper()
	out, err := c.runCompose(args...)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	return out
}

// docker runs a docker command and fails the test if it fails.
func (c *cluster) docker(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// container is the id of a service's container.
func (c *cluster) container(t testing.TB, service string) string {
	t.Helper()
	id := strings.TrimSpace(c.mustCompose(t, "ps", "-q", service))
	if id == "" || strings.ContainsAny(id, " \n") {
		t.Fatalf("service %s: container id %q", service, id)
	}
	return id
}

// network is the compose project's network, which the containers share.
func (c *cluster) network(t testing.TB, service string) string {
	t.Helper()
	nets := strings.Fields(c.docker(t, "inspect", "--format", "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}", c.ids[service]))
	if len(nets) != 1 {
		t.Fatalf("service %s is on networks %v, want one", service, nets)
	}
	return nets[0]
}

// ip is a service's address on the project network, which the host reaches
// directly on Linux.
func (c *cluster) ip(t testing.TB, service string) string {
	t.Helper()
	return c.docker(t, "inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", c.ids[service])
}

// down removes the project: containers, network and volumes. On failure it
// first keeps the logs of every service in the test output.
func (c *cluster) down() {
	if c.t.Failed() {
		if out, err := c.runCompose("logs", "--no-color", "--tail", "300"); err == nil || out != "" {
			c.t.Logf("compose logs:\n%s", out)
		}
	}
	if out, err := c.runCompose("down", "-v", "--remove-orphans", "-t", "2"); err != nil {
		c.t.Errorf("tear down %s: %v\n%s", c.project, err, out)
	}
}

// waitReady waits until every queen is ready and sees the given hives.
func (c *cluster) waitReady(t testing.TB, within time.Duration, hives ...string) {
	t.Helper()
	waitFor(t, within, fmt.Sprintf("queens ready with hives %v", hives), func() error {
		for _, q := range c.queens {
			if err := ready(q.url); err != nil {
				return fmt.Errorf("%s: %w", q.name, err)
			}
			if err := c.hivesOnline(q, hives...); err != nil {
				return err
			}
		}
		return nil
	})
}

// hivesOnline fails unless queen q lists every hive in hives.
func (c *cluster) hivesOnline(q queen, hives ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	list, err := q.cl.ListHives(ctx)
	if err != nil {
		return fmt.Errorf("%s: list hives: %w", q.name, err)
	}
	seen := map[string]bool{}
	for _, h := range list.Hives {
		seen[h.ID] = true
	}
	for _, h := range hives {
		if !seen[h] {
			return fmt.Errorf("%s does not list hive %s (it lists %v)", q.name, h, hiveIDs(list))
		}
	}
	return nil
}

// hiveGone waits until no queen lists the hive.
func (c *cluster) hiveGone(t testing.TB, within time.Duration, hive string) {
	t.Helper()
	waitFor(t, within, "hive "+hive+" gone from every queen", func() error {
		for _, q := range c.queens {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := q.cl.GetHive(ctx, hive)
			cancel()
			if !client.IsStatus(err, http.StatusNotFound) {
				return fmt.Errorf("%s still answers for %s (err %v)", q.name, hive, err)
			}
		}
		return nil
	})
}

func hiveIDs(l api.HiveList) []string {
	var ids []string
	for _, h := range l.Hives {
		ids = append(ids, h.ID)
	}
	return ids
}

func ready(base string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/readyz", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		return fmt.Errorf("readyz %d: %s", resp.StatusCode, strings.TrimSpace(b.String()))
	}
	return nil
}

// waitFor polls cond until it returns nil, failing the test with the last
// error after within.
func waitFor(t testing.TB, within time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s: %v", within, what, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// errStop ends a stream read early on purpose.
var errStop = errors.New("stop reading")

// clientFilter lists up to limit jobs, newest first.
func clientFilter(limit int) client.JobFilter { return client.JobFilter{Limit: limit} }
