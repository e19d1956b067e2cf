package bus

import (
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// reconnectWait is how long a connection waits between reconnect tries:
// jobs wait on it, and a NATS cluster moves a client to another server in
// well under a second.
const reconnectWait = 250 * time.Millisecond

// HiveOptions are the connection options of a hive's connection, however
// it authenticates.
//
// The inbox prefix carries the hive id, so a server can let each hive
// receive replies on its own inboxes only. There is no reconnect buffer: a
// publish while reconnecting fails at once, so narration is resent in
// order (Publisher) instead of landing after a gap. The hive reconnects
// forever, quickly: its jobs wait on the connection.
func HiveOptions(id string) []nats.Option {
	return []nats.Option{
		nats.Name("hive " + id),
		nats.CustomInboxPrefix(Inbox(id)),
		nats.ReconnectBufSize(-1),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(reconnectWait),
	}
}

// QueenOptions are the connection options of a queen's connection, however
// it authenticates. A queen reconnects forever, quickly, like a hive; its
// writes wait for their acknowledgements, so it keeps the reconnect buffer.
func QueenOptions() []nats.Option {
	return []nats.Option{
		nats.Name(QueenWriter),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(reconnectWait),
	}
}

// LogRetries logs why connecting or reconnecting to NATS fails (refused,
// an unknown host, a password the server refuses): the first failure,
// then a changed reason at once, the same one every retryLogEvery. A
// connection that retries forever would otherwise wait without a word.
func LogRetries(log *slog.Logger) nats.Option {
	var mu sync.Mutex
	var last string
	var at time.Time
	return nats.ReconnectErrHandler(func(nc *nats.Conn, err error) {
		if err == nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if err.Error() == last && time.Since(at) < retryLogEvery {
			return
		}
		last, at = err.Error(), time.Now()
		log.Warn("cannot reach NATS; retrying", "url", nc.ConnectedUrlRedacted(), "servers", nc.Servers(), "err", err)
	})
}

// retryLogEvery spaces LogRetries' lines of one reason.
const retryLogEvery = 30 * time.Second
