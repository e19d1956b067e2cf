// Package natsauth gives the queen and each hive a NATS identity of their
// own. A hive may publish only its own narration and heartbeat, pull and ack
// only its own work queue, and receive only its own control subject and
// reply inboxes; the queen may do everything.
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
			"ctl.hive." + hive + ".>",
		}},
		// Replies to the queen's cancel requests.
		Response: &server.ResponsePermission{MaxMsgs: 1},
	}
}

// Users are the server-side users for f: the queen unrestricted, each hive
// held to its own subjects.
func Users(f File) []*server.User {
	users := []*server.User{{Username: QueenUser, Password: f.QueenPassword}}
	for _, h := range sortedHives(f) {
		users = append(users, &server.User{Username: h, Password: f.Hives[h], Permissions: HivePermissions(h)})
	}
	return users
}

func sortedHives(f File) []string {
	hives := make([]string, 0, len(f.Hives))
	for h := range f.Hives {
		hives = append(hives, h)
	}
	sort.Strings(hives)
	return hives
}

// ServerConfig is the authorization block for a nats-server configuration
// file, for clusters that run NATS outside the queen.
func ServerConfig(f File) string {
	var b strings.Builder
	b.WriteString("authorization {\n  users = [\n")
	fmt.Fprintf(&b, "    { user: %q, password: %q }\n", QueenUser, f.QueenPassword)
	for _, h := range sortedHives(f) {
		p := HivePermissions(h)
		fmt.Fprintf(&b, "    { user: %q, password: %q, permissions: {\n", h, f.Hives[h])
		fmt.Fprintf(&b, "        publish: { allow: %s }\n", quoteList(p.Publish.Allow))
		fmt.Fprintf(&b, "        subscribe: { allow: %s }\n", quoteList(p.Subscribe.Allow))
		fmt.Fprintf(&b, "        allow_responses: { max: 1 }\n      } }\n")
	}
	b.WriteString("  ]\n}\n")
	return b.String()
}

func quoteList(s []string) string {
	q := make([]string, len(s))
	for i, v := range s {
		q[i] = fmt.Sprintf("%q", v)
	}
	return "[" + strings.Join(q, ", ") + "]"
}
