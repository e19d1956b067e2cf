package testkit

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// NATS starts a NATS server with JetStream for one test: on a random
// loopback port, storing under a temporary directory, silent, shut down
// when the test ends. edit changes the options before it starts (users,
// store limits).
func NATS(tb testing.TB, edit ...func(*server.Options)) *server.Server {
	tb.Helper()
	// MaxPayload as rbee's NATS servers have it (the queen's embedded one,
	// deploy/nats/nats.conf): a job carries a request body of up to 1 MiB.
	opts := &server.Options{JetStream: true, StoreDir: tb.TempDir(), Port: -1, Host: "127.0.0.1", NoLog: true, NoSigs: true,
		MaxPayload: 8 << 20}
	for _, e := range edit {
		e(opts)
	}
	s, err := server.NewServer(opts)
	if err != nil {
		tb.Fatal(err)
	}
	s.Start()
	tb.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	if !s.ReadyForConnections(10 * time.Second) {
		tb.Fatal("nats not ready within 10s")
	}
	return s
}

// Connect connects to s for one test, closing the connection when it
// ends.
func Connect(tb testing.TB, s *server.Server, opts ...nats.Option) *nats.Conn {
	tb.Helper()
	nc, err := nats.Connect(s.ClientURL(), opts...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	return nc
}

// JetStream starts a NATS server as NATS does and returns a JetStream
// handle on a connection to it.
func JetStream(tb testing.TB) jetstream.JetStream {
	tb.Helper()
	js, err := jetstream.New(Connect(tb, NATS(tb)))
	if err != nil {
		tb.Fatal(err)
	}
	return js
}
