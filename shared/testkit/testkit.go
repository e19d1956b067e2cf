// Package testkit holds the helpers that tests of every module need and
// would otherwise copy: waiting for a condition, free loopback ports, a
// buffer that a child process writes while the test reads it, and an
// in-process NATS server with JetStream. It imports nothing of ours, so
// any module's tests may use it; production code never does.
package testkit

import (
	"bytes"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"
)

// PollInterval is how often WaitFor asks its condition again.
const PollInterval = 20 * time.Millisecond

// WaitFor asks ok every PollInterval until it holds, and fails the test,
// naming what it waited for, if it does not within d.
func WaitFor(tb testing.TB, d time.Duration, what string, ok func() bool) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			tb.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(PollInterval)
	}
}

// FreePorts returns n distinct loopback ports that were free a moment ago,
// for child processes that cannot be told to listen on port 0. All n are
// held open together until they are returned, so they differ.
func FreePorts(tb testing.TB, n int) []int {
	tb.Helper()
	ports := make([]int, 0, n)
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		defer ln.Close()
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// FreePort returns one loopback port that was free a moment ago.
func FreePort(tb testing.TB) int {
	tb.Helper()
	return FreePorts(tb, 1)[0]
}

// FreeAddr returns a loopback host:port that was free a moment ago.
func FreeAddr(tb testing.TB) string {
	tb.Helper()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(tb)))
}

// SyncBuffer is a bytes.Buffer that one goroutine (a child process's
// output, a logger) may write while another reads it. The zero value is
// ready to use.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
