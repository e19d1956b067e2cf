// Package natsauth gives the queen and each hive a NATS identity of their
// own, each hive in an account of its own. A hive may publish only its own
// narration and heartbeat, pull and ack only its own work queue, and
// receive only its own control subject and reply inboxes; the queen may do
// everything.
package natsauth

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/nats-io/nats-server/v2/server"

	"rbee.dev/shared/bus"
)

// QueenUser is the NATS user name of every queen.
const QueenUser = "queen"

// File is the credentials file `queen nats-config` writes and the queen
// reads with --nats-auth.
type File struct {
	QueenPassword string            `json:"queen_password"`
	Hives         map[string]string `json:"hives"`
}

// Generate makes fresh random passwords for the queen and each hive.
func Generate(hives []string) (File, error) {
	f := File{QueenPassword: secret(), Hives: map[string]string{}}
	for _, h := range hives {
		if !bus.ValidToken(h) {
			return f, fmt.Errorf("hive id %q must be 1-64 letters, digits, '-' or '_'", h)
		}
		if h == QueenUser {
			return f, fmt.Errorf("hive id %q is reserved", h)
		}
		f.Hives[h] = secret()
	}
	return f, nil
}

func secret() string {
	var b [24]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// Load reads a credentials file.
func Load(path string) (File, error) {
	var f File
	data, err := os.ReadFile(path)
	if err != nil {
		return f, fmt.Errorf("nats auth file: %w", err)
	}
	if err := json.Unmarshal(data, &f); err != nil {
		return f, fmt.Errorf("nats auth file %s: %w", path, err)
	}
	if f.QueenPassword == "" {
		return f, fmt.Errorf("nats auth file %s: queen_password is empty", path)
	}
	// Each id names an account and its subjects: "*" would be every hive's.
	for h, pw := range f.Hives {
		if !bus.ValidToken(h) || h == QueenUser || pw == "" {
			return f, fmt.Errorf("nats auth file %s: hive %q: an id is 1-64 letters, digits, '-' or '_', not %q, with a password", path, h, QueenUser)
		}
	}
	return f, nil
}

// HivePermissions are the subjects one hive may use. It reads back only its
// own narration (a direct get on its own subjects; stream info would list
// every job's), and it uses the work-queue consumer that queens make for it
// without making or changing it, so it cannot choose what it reads.
func HivePermissions(hive string) *server.Permissions {
	consumer := bus.DispatchConsumer(hive)
	return &server.Permissions{
		Publish: &server.SubjectPermission{Allow: []string{
			bus.NarrWriter(hive),
			"$KV." + bus.HivesBucket + "." + hive,
			"$JS.API.STREAM.INFO.KV_" + bus.HivesBucket,
			bus.DirectGetLast(bus.NarrStream, bus.NarrWriter(hive)),
			"$JS.API.CONSUMER.INFO." + bus.DispatchStream + "." + consumer,
			"$JS.API.CONSUMER.MSG.NEXT." + bus.DispatchStream + "." + consumer,
			"$JS.ACK." + bus.DispatchStream + "." + consumer + ".>",
		}},
		Subscribe: &server.SubjectPermission{Allow: []string{
			bus.Inbox(hive) + ".>",
			ctlServices(hive),
		}},
		// Replies to the queen's cancel requests.
		Response: &server.ResponsePermission{MaxMsgs: 1},
	}
}

// QueenAccount is the NATS account of the queens: every stream, bucket and
// consumer of rbee lives in it.
const QueenAccount = "RBEE"

// HiveAccount is the NATS account of one hive, its own: it holds nothing
// but the hive's user, and imports from the queens' account exactly the
// services of HivePermissions.
//
// A hive needs accounts, not only permissions: NATS checks what a client
// publishes to, never the reply subject it names, and JetStream answers
// (an acknowledgement, a direct get's stored message with its headers, a
// pull's dispatches) on that reply subject as a trusted client of the
// account the stream is in. In the queens' account, a hive could so write
// anything anywhere (an API key, another hive's work or narration, usage).
// A request that crosses from an account by a service import carries a
// reply subject the server makes itself, mapped back to the hive's
// account: whatever reply a hive names, the answer lands in its own
// account, where only its own user is.
func HiveAccount(hive string) string { return "HIVE_" + hive }

// queenServices are what the queens' account exports to hives' accounts:
// each HivePermissions subject falls under one. A pull's dispatches come
// as a stream of answers.
var queenServices = []struct {
	subject  string
	streamed bool
}{
	{bus.NarrAll, false},
	{"$KV." + bus.HivesBucket + ".>", false},
	{"$JS.API.STREAM.INFO.KV_" + bus.HivesBucket, false},
	{"$JS.API.DIRECT.GET." + bus.NarrStream + ".>", false},
	{"$JS.API.CONSUMER.INFO." + bus.DispatchStream + ".*", false},
	{"$JS.API.CONSUMER.MSG.NEXT." + bus.DispatchStream + ".*", true},
	{"$JS.ACK." + bus.DispatchStream + ".>", false},
	{jsAccountInfo, false},
}

// jsAccountInfo is JetStream's account info request. A hive's account
// imports it though its user may not ask it: an account without JetStream
// that imports no JetStream service of this name gets the server's own
// JetStream API, which answers that JetStream is off, in place of the
// imports it has.
const jsAccountInfo = "$JS.API.INFO"

// pullAnswerFor is how long a hive's pull may be answered: beyond the 30 s
// a hive's pull waits for a dispatch (hive/agent pullWait).
const pullAnswerFor = "45s"

// ctlServices is what a hive's account exports to the queens': the
// requests the queens send the hive (bus.Cancel).
func ctlServices(hive string) string { return "ctl.hive." + hive + ".>" }

// Apply configures o with f's accounts and users, as ServerConfig writes
// them for an external server: one configuration, wherever NATS runs.
func Apply(o *server.Options, f File) error {
	if err := o.ProcessConfigString(ServerConfig(f)); err != nil {
		return fmt.Errorf("nats accounts: %w", err)
	}
	return nil
}

func sortedHives(f File) []string {
	hives := make([]string, 0, len(f.Hives))
	for h := range f.Hives {
		hives = append(hives, h)
	}
	sort.Strings(hives)
	return hives
}

// ServerConfig is the accounts block of a nats-server configuration: the
// queens' account with JetStream and the services hives use, and one
// account per hive (HiveAccount) whose user is held to its own subjects.
func ServerConfig(f File) string {
	hives := sortedHives(f)
	var b strings.Builder
	b.WriteString("accounts {\n")
	fmt.Fprintf(&b, "  %s: {\n    jetstream: enabled\n", QueenAccount)
	fmt.Fprintf(&b, "    users: [ { user: %q, password: %q } ]\n", QueenUser, f.QueenPassword)
	b.WriteString("    exports: [\n")
	for _, e := range queenServices {
		if e.streamed {
			// The server keeps a streamed answer's way back until the
			// threshold, however soon the pull ends: a hive sending pulls
			// in a loop makes it hold that many. A pull waits 30 s.
			fmt.Fprintf(&b, "      { service: %q, response_type: stream, response_threshold: %q }\n", e.subject, pullAnswerFor)
		} else {
			fmt.Fprintf(&b, "      { service: %q }\n", e.subject)
		}
	}
	b.WriteString("    ]\n")
	if len(hives) > 0 {
		b.WriteString("    imports: [\n")
		for _, h := range hives {
			fmt.Fprintf(&b, "      { service: { account: %q, subject: %q } }\n", HiveAccount(h), ctlServices(h))
		}
		b.WriteString("    ]\n")
	}
	b.WriteString("  }\n")
	for _, h := range hives {
		p := HivePermissions(h)
		fmt.Fprintf(&b, "  %s: {\n", HiveAccount(h))
		fmt.Fprintf(&b, "    users: [ { user: %q, password: %q, permissions: {\n", h, f.Hives[h])
		fmt.Fprintf(&b, "        publish: { allow: %s }\n", quoteList(p.Publish.Allow))
		fmt.Fprintf(&b, "        subscribe: { allow: %s }\n", quoteList(p.Subscribe.Allow))
		fmt.Fprintf(&b, "        allow_responses: { max: 1 }\n      } } ]\n")
		b.WriteString("    imports: [\n")
		for _, s := range append(p.Publish.Allow, jsAccountInfo) {
			fmt.Fprintf(&b, "      { service: { account: %q, subject: %q } }\n", QueenAccount, s)
		}
		b.WriteString("    ]\n")
		fmt.Fprintf(&b, "    exports: [ { service: %q, accounts: [%q] } ]\n", ctlServices(h), QueenAccount)
		b.WriteString("  }\n")
	}
	b.WriteString("}\n")
	return b.String()
}

func quoteList(s []string) string {
	q := make([]string, len(s))
	for i, v := range s {
		q[i] = fmt.Sprintf("%q", v)
	}
	return "[" + strings.Join(q, ", ") + "]"
}
