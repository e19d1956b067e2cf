// Package embedded runs the NATS server with JetStream inside the queen,
// the single-machine default: no separate process to install or start.
package embedded

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"rbee.dev/queen/internal/natsauth"
)

// Options shape the embedded server.
type Options struct {
	// Listen is where remote hives connect; empty accepts in-process
	// connections only.
	Listen string
	// Auth, when set, holds the only identities accepted: the queens'
	// account and one account per hive (natsauth).
	Auth *natsauth.File
	// TLS, when set, is required of connections on the listener.
	TLS *tls.Config
	// MaxStore bounds the bytes JetStream keeps on disk; 0 leaves the
	// server's default, most of the disk.
	MaxStore int64
	// Sync is when JetStream's writes are forced to disk.
	Sync Sync
}

// MaxPayload is the largest NATS message the embedded server takes, as
// deploy/nats/nats.conf sets it for the compose cluster.
const MaxPayload = 8 << 20

// Start runs a JetStream-enabled NATS server that stores under dir.
func Start(dir string, o Options) (*server.Server, error) {
	listen := o.Listen
	opts := &server.Options{
		ServerName: "rbee-queen",
		JetStream:  true,
		StoreDir:   filepath.Join(dir, "jetstream"),
		NoSigs:     true,
		NoLog:      true,
		DontListen: listen == "",
		// Without a bound the server takes up to 75% of the disk, and
		// one job's output could fill the machine.
		JetStreamMaxStore: o.MaxStore,
		// A job's record and dispatch carry its request: an inference's
		// body of up to 1 MiB, larger where re-encoding escapes it.
		MaxPayload:   MaxPayload,
		SyncAlways:   o.Sync.Always,
		SyncInterval: o.Sync.Interval,
	}
	// JetStream keeps each account's data in a directory of its name: the
	// queens' account with identities, the global one without. A queen
	// given identities, or no longer given them, keeps its data.
	account, other := "$G", natsauth.QueenAccount
	if o.Auth != nil {
		if err := natsauth.Apply(opts, *o.Auth); err != nil {
			return nil, err
		}
		account, other = other, account
	}
	if err := moveAccount(filepath.Join(opts.StoreDir, "jetstream"), other, account); err != nil {
		return nil, err
	}
	if o.TLS != nil {
		opts.TLSConfig, opts.TLS, opts.TLSVerify = o.TLS, true, o.TLS.ClientCAs != nil
		opts.TLSTimeout = 5
	}
	if listen != "" {
		host, port, err := net.SplitHostPort(listen)
		if err != nil {
			return nil, fmt.Errorf("nats listen address %q: %w", listen, err)
		}
		opts.Host = host
		if opts.Port, err = strconv.Atoi(port); err != nil {
			return nil, fmt.Errorf("nats listen port %q: %w", port, err)
		}
		if opts.Port == 0 {
			opts.Port = server.RANDOM_PORT
		}
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("nats server: %w", err)
	}
	s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("nats server did not become ready")
	}
	return s, nil
}

// moveAccount renames the JetStream data of account from to account to,
// unless to has data already or from has none.
func moveAccount(dir, from, to string) error {
	if _, err := os.Stat(filepath.Join(dir, to)); !errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if _, err := os.Stat(filepath.Join(dir, from)); err != nil {
		return nil
	}
	if err := os.Rename(filepath.Join(dir, from), filepath.Join(dir, to)); err != nil {
		return fmt.Errorf("move the NATS data of account %s to %s: %w", from, to, err)
	}
	return nil
}
