package relay

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"rbee.dev/shared/bus"
	"rbee.dev/shared/testkit"
)

// rawPublish sends one message the way a hostile hive can, past any client
// library: its header block exactly as given, well formed or not.
func rawPublish(t *testing.T, url, subj, hdr, body string) {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(url, "nats://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	if _, err := r.ReadString('\n'); err != nil { // INFO
		t.Fatal(err)
	}
	fmt.Fprintf(c, "CONNECT {\"verbose\":false,\"headers\":true,\"protocol\":1}\r\n")
	fmt.Fprintf(c, "HPUB %s %d %d\r\n%s%s\r\nPING\r\n", subj, len(hdr), len(hdr)+len(body), hdr, body)
	if l, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(l, "PONG") {
		t.Fatalf("publish %s: %q %v", subj, l, err)
	}
}

// forgeries are frames hive h9, which writes nothing of job j1, can store
// under its own writer token in j1's subjects: headers claiming the
// server's stream sequence and subject (a queen's end), once well formed
// (the server's own headers follow) and once with a blank line that hides
// the server's headers from the reader, and a header block no reader can
// parse.
var forgeries = []struct{ name, hdr string }{
	{"claims", "NATS/1.0\r\nNats-Sequence: 999999\r\nNats-Subject: narr.j1.queen.end.1\r\nNats-Stream: NARR\r\nRbee-Seq: 2\r\n\r\n"},
	{"hidden", "NATS/1.0\r\nNats-Stream: NARR\r\nNats-Subject: narr.j1.queen.end.1\r\nNats-Sequence: 18446744073709551615\r\nNats-Time-Stamp: 2026-01-01T00:00:00Z\r\nRbee-Seq: 2\r\n\r\n\r\n"},
	{"garbled", "NATS/1.0\r\nnot a header line\r\n\r\n"},
}

const forgedEnd = `{"job_id":"j1","seq":2,"attempt":1,"action":"end","state":"done","message":"forged"}`

// A hive cannot stall, end or add to the story of a job it does not write,
// whatever headers it gives its frames: a live client and one reading
// history both get the job's own events, in order, once, and its own end.
func TestForgedFramesChangeNoOtherJob(t *testing.T) {
	for _, fg := range forgeries {
		t.Run(fg.name, func(t *testing.T) {
			r, _ := newLiveRig(t)
			url := r.nc.ConnectedUrl()
			r.publish(t, "j1", ev(bus.QueenWriter, 1, 1, "tick"))
			live := &gated{release: make(chan struct{})}
			close(live.release)
			streamed := make(chan error, 1)
			go func() { streamed <- r.hub.Stream(context.Background(), live, "j1", 0, 100*time.Millisecond) }()
			testkit.WaitFor(t, 5*time.Second, "the client to follow", func() bool { return r.hub.Clients() == 1 })
			rawPublish(t, url, "narr.j1.h9.ev", fg.hdr, forgedEnd)
			rawPublish(t, url, "narr.j1.h9.end.1", fg.hdr, forgedEnd)
			r.publish(t, "j1", ev(bus.QueenWriter, 2, 1, "tick"))
			r.publish(t, "j1", ev(bus.QueenWriter, 3, 1, "tick"))
			r.publish(t, "j1", end(bus.QueenWriter, 4, 1, "done"))
			select {
			case err := <-streamed:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("the live client's stream did not end; it has %v", live.seqs)
			}
			live.pings = max(live.pings, 1) // a quick stream may end before its first ping
			live.check(t, "the live client", 1, 4)

			late := &gated{release: make(chan struct{})}
			close(late.release)
			if err := r.hub.Stream(context.Background(), late, "j1", 0, 100*time.Millisecond); err != nil {
				t.Fatal(err)
			}
			late.pings = max(late.pings, 1)
			late.check(t, "a client reading history", 1, 4)
		})
	}
}
