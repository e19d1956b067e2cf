package embedded

import (
	"errors"
	"fmt"
	"time"
)

// ServerDefaultSync is how often nats-server flushes JetStream's files to
// disk when told nothing.
const ServerDefaultSync = 2 * time.Minute

// Sync is when the embedded server forces JetStream's writes to disk. A
// write is acknowledged once it is in the operating system's page cache, so
// a process crash loses nothing; a power cut or kernel crash loses what was
// written since the last sync. Always syncs each write before it is
// acknowledged; an interval bounds the loss to about that long.
type Sync struct {
	// Always syncs every write.
	Always bool
	// Interval is the time between syncs; 0 with Always false is the
	// server's default, ServerDefaultSync.
	Interval time.Duration
}

// DefaultSync is the queen's choice when --nats-sync is not given: one
// second bounds what a power cut can take to the last second of work, and
// costs little over no syncing at all (BENCHMARKS.md, "Durability").
var DefaultSync = Sync{Interval: time.Second}

// String is the flag form: "always", "default", or a duration.
func (s Sync) String() string {
	switch {
	case s.Always:
		return "always"
	case s.Interval == 0:
		return "default"
	}
	return s.Interval.String()
}

// Set parses "always", "default" (the server's own two minutes) or a
// positive duration such as 100ms or 1s.
func (s *Sync) Set(v string) error {
	switch v {
	case "always":
		*s = Sync{Always: true}
		return nil
	case "default":
		*s = Sync{}
		return nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return fmt.Errorf("%q is not always, default or a duration like 1s", v)
	}
	if d <= 0 {
		return errors.New("a sync interval must be positive")
	}
	*s = Sync{Interval: d}
	return nil
}

// LossWindow says, for people, what a power cut may take.
func (s Sync) LossWindow() string {
	switch {
	case s.Always:
		return "nothing acknowledged"
	case s.Interval == 0:
		return "up to " + ServerDefaultSync.String() + " of acknowledged writes"
	}
	return "up to " + s.Interval.String() + " of acknowledged writes"
}
