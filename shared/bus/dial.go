package bus

import (
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
