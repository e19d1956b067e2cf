//go:build e2e

package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"rbee.dev/queen/internal/natsauth"
	"rbee.dev/shared/api"
	"rbee.dev/shared/bus"
)

// testNATSKilledUnderClient kills the NATS server q1 is connected to while
// a client reads a 3,000-event job through q1 on one connection that it
// never reopens: q1 moves to another server and the client still gets
// every event, the end and [DONE]. The server then rejoins.
//
// The server may lead the narration stream, but not the hives bucket: a
// new leader takes seconds to elect, and under the suite's short hive TTL
// both hives would be lost meanwhile (testNATSKilled lets that happen).
// This test is about the queen's client, so its job should live.
func testNATSKilledUnderClient(t *testing.T, c *cluster) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	q := c.queens[0]
	server := c.connectedTo(t, q.name, bus.QueenWriter)
	c.keepOff(t, "KV_"+bus.HivesBucket, server)
	const lines = 3000
	id := c.submit(t, q, tick("hive1", lines, 5*time.Millisecond))

	// The read runs on while the server is killed; it records when each
	// frame came, to say how long the stream paused.
	var mu sync.Mutex
	var at []time.Time
	reading := make(chan struct{})
	var once sync.Once
	s := &story{job: id, conns: []string{q.name}}
	read := make(chan error, 1)
	go func() {
		read <- c.readOnce(ctx, q, id, 0, s, func(s *story) bool {
			mu.Lock()
			at = append(at, time.Now())
			mu.Unlock()
			if len(s.frames) >= 200 {
				once.Do(func() { close(reading) })
			}
			return false
		})
	}()
	select {
	case <-reading:
	case err := <-read:
		t.Fatalf("the read ended before 200 frames: %v", err)
	case <-ctx.Done():
		t.Fatal("no 200 frames within the test's time")
	}
	t.Logf("%s is connected to %s (hive1 to %s, NARR is led by %s); killing it",
		q.name, server, c.connectedTo(t, "hive1", "hive hive1"), c.streamLeader(t, bus.NarrStream))
	killed := time.Now()
	c.docker(t, "kill", c.ids[server])
	err := <-read
	if err != nil {
		t.Fatalf("the client on %s was cut off after %d frames, %s after %s was killed: %v",
			q.name, len(s.frames), time.Since(killed).Round(100*time.Millisecond), server, err)
	}
	end := check(t, s)
	c.jobs.ended(id, end.State)
	out := 0
	for _, f := range s.frames {
		var e api.Event
		if json.Unmarshal(f.Data, &e) == nil && output(e) {
			out++
		}
	}
	if out != lines || end.State != api.StateDone {
		t.Errorf("the client got %d of %d lines and an end %s (%q), want all and done", out, lines, end.State, end.Error)
	}
	mu.Lock()
	var gap time.Duration
	var gapAt time.Time
	for i := 1; i < len(at); i++ {
		if d := at[i].Sub(at[i-1]); d > gap {
			gap, gapAt = d, at[i-1]
		}
	}
	mu.Unlock()
	t.Logf("with %s killed: %d frames on one connection; the longest pause was %s, %s after the kill",
		server, len(s.frames), gap.Round(10*time.Millisecond), gapAt.Sub(killed).Round(10*time.Millisecond))

	// What the queen made of it, for the pause above.
	t.Logf("%s's log since the kill:\n%s", q.name, c.docker(t, "logs", "--since", killed.Add(-time.Second).Format(time.RFC3339Nano), c.ids[q.name]))

	c.docker(t, "start", c.ids[server])
	c.waitHealthy(t, time.Minute, server)
	c.waitReady(t, time.Minute, "hive1", "hive2")
}

// keepOff moves the leadership of stream off server, with the queen's NATS
// user through n1's published port.
func (c *cluster) keepOff(t *testing.T, stream, server string) {
	t.Helper()
	f, err := natsauth.Load(filepath.Join(c.root, "deploy", "nats", "nats-auth.json"))
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(c.natsURL, nats.UserInfo(natsauth.QueenUser, f.QueenPassword))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	waitFor(t, 30*time.Second, stream+" led off "+server, func() error {
		if c.streamLeader(t, stream) != server {
			return nil
		}
		if _, err := nc.Request("$JS.API.STREAM.LEADER.STEPDOWN."+stream, nil, 5*time.Second); err != nil {
			return err
		}
		return fmt.Errorf("%s still leads %s", server, stream)
	})
}

// connectedTo names the NATS server (n1, n2 or n3) that a service's
// connection is on, from the servers' monitoring endpoints: the connection
// that comes from the service's address under the given name.
func (c *cluster) connectedTo(t *testing.T, service, name string) string {
	t.Helper()
	ip := c.ip(t, service)
	var server string
	waitFor(t, 30*time.Second, service+"'s NATS server", func() error {
		var on []string
		for _, n := range []string{"n1", "n2", "n3"} {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.ip(t, n)+":8222/connz?limit=4096", nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				cancel()
				continue
			}
			var connz struct {
				Conns []struct {
					IP   string `json:"ip"`
					Name string `json:"name"`
				} `json:"connections"`
			}
			err = json.NewDecoder(resp.Body).Decode(&connz)
			resp.Body.Close()
			cancel()
			if err != nil {
				continue
			}
			for _, cn := range connz.Conns {
				if cn.IP == ip && cn.Name == name {
					on = append(on, n)
				}
			}
		}
		if len(on) != 1 {
			return fmt.Errorf("%s (%s) has connections named %q on [%s], want one server", service, ip, name, strings.Join(on, " "))
		}
		server = on[0]
		return nil
	})
	return server
}
