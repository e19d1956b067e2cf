package bus

import (
	"time"

	"github.com/nats-io/nats.go"
)

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
		nats.ReconnectWait(250 * time.Millisecond),
	}
}
