package natsauth_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"rbee.dev/queen/internal/natsauth"
	"rbee.dev/queen/internal/store"
	"rbee.dev/shared/api"
	"rbee.dev/shared/bus"
	"rbee.dev/shared/testkit"
)

// A hive's NATS identity reaches its own subjects only, and every attempt
// beyond them is refused out loud.
func TestHivePermissions(t *testing.T) {
	s, queen, f := cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := nats.Connect(s.ClientURL(), nats.UserInfo("h1", "wrong")); err == nil {
		t.Fatal("wrong password accepted")
	}

	var mu sync.Mutex
	var violations []string
	hive, err := nats.Connect(s.ClientURL(), nats.UserInfo("h1", f.Hives["h1"]), nats.CustomInboxPrefix(bus.Inbox("h1")),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			mu.Lock()
			violations = append(violations, err.Error())
			mu.Unlock()
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer hive.Close()
	js, _ := jetstream.New(hive)

	allowed := map[string]func(context.Context) error{
		"own narration": func(c context.Context) error {
			_, err := js.Publish(c, bus.Narr("job1", "h1", bus.KindEvent), []byte(`{}`))
			return err
		},
		"own last event": func(c context.Context) error {
			m, err := hive.RequestWithContext(c, bus.DirectGetLast(bus.NarrStream, bus.NarrJobWriter("job1", "h1")), nil)
			if st := m.Header.Get("Status"); err == nil && st != "" && st != "404" {
				err = fmt.Errorf("status %s", m.Header.Get("Status"))
			}
			return err
		},
		"own heartbeat": func(c context.Context) error {
			kv, err := js.KeyValue(c, bus.HivesBucket)
			if err == nil {
				_, err = kv.Put(c, "h1", []byte(`{}`))
			}
			return err
		},
		"own work queue": func(c context.Context) error {
			cons, err := js.Consumer(c, bus.DispatchStream, bus.DispatchConsumer("h1"))
			if err == nil {
				_, err = cons.Next(jetstream.FetchMaxWait(200 * time.Millisecond))
				if errors.Is(err, nats.ErrTimeout) {
					err = nil
				}
			}
			return err
		},
	}
	allowed["answering the queen's control requests"] = func(c context.Context) error {
		sub, err := hive.Subscribe(bus.Cancel("h1"), func(m *nats.Msg) { _ = m.Respond([]byte("ok")) })
		if err != nil {
			return err
		}
		defer sub.Unsubscribe()
		if err := hive.Flush(); err != nil {
			return err
		}
		m, err := queen.RequestWithContext(c, bus.Cancel("h1"), nil)
		if err == nil && string(m.Data) != "ok" {
			err = fmt.Errorf("answer %q", m.Data)
		}
		return err
	}
	for name, try := range allowed {
		c, cancel := context.WithTimeout(ctx, 2*time.Second)
		if err := try(c); err != nil {
			t.Errorf("%s: refused: %v", name, err)
		}
		cancel()
	}

	refused := map[string]func(context.Context) error{
		"another hive's narration": func(c context.Context) error {
			_, err := js.Publish(c, bus.Narr("job1", "h2", bus.KindEnd), []byte(`{}`))
			return err
		},
		"the queen's narration": func(c context.Context) error {
			_, err := js.Publish(c, bus.Narr("job1", bus.QueenWriter, bus.KindEvent), []byte(`{}`))
			return err
		},
		"another hive's heartbeat": func(c context.Context) error {
			kv, err := js.KeyValue(c, bus.HivesBucket)
			if err == nil {
				_, err = kv.Put(c, "h2", []byte(`{}`))
			}
			return err
		},
		"making its own work queue": func(c context.Context) error {
			_, err := js.CreateOrUpdateConsumer(c, bus.DispatchStream, jetstream.ConsumerConfig{
				Durable: bus.DispatchConsumer("h1"), FilterSubject: bus.DispatchAll, AckPolicy: jetstream.AckExplicitPolicy})
			return err
		},
		"the narration stream's subjects": func(c context.Context) error {
			_, err := js.Stream(c, bus.NarrStream)
			return err
		},
		"another hive's last event": func(c context.Context) error {
			_, err := hive.RequestWithContext(c, bus.DirectGetLast(bus.NarrStream, bus.NarrJobWriter("job1", "h2")), nil)
			return err
		},
		"another hive's work queue": func(c context.Context) error {
			_, err := js.CreateOrUpdateConsumer(c, bus.DispatchStream, jetstream.ConsumerConfig{
				Durable: bus.DispatchConsumer("h2"), FilterSubject: bus.Dispatch("h2"), AckPolicy: jetstream.AckExplicitPolicy})
			return err
		},
		"dispatching work": func(c context.Context) error {
			_, err := js.Publish(c, bus.Dispatch("h2"), []byte(`{}`))
			return err
		},
		"job records": func(c context.Context) error {
			_, err := js.KeyValue(c, bus.JobsBucket)
			return err
		},
		"another hive's control subject": func(c context.Context) error {
			sub, err := hive.SubscribeSync(bus.Cancel("h2"))
			if err != nil {
				return err
			}
			defer sub.Unsubscribe()
			return hive.FlushTimeout(time.Second)
		},
	}
	for name, try := range refused {
		c, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		err := try(c)
		cancel()
		// The server answers a refused publish or subscription with a
		// permissions error on the connection: the hive is told.
		waitViolation := time.Now().Add(time.Second)
		for {
			mu.Lock()
			seen := strings.Contains(strings.Join(violations, " "), "Permissions Violation")
			mu.Unlock()
			if seen || time.Now().After(waitViolation) {
				if !seen {
					t.Errorf("%s: no permissions violation reported (err %v)", name, err)
				}
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		mu.Lock()
		violations = nil
		mu.Unlock()
	}

	// And the queen saw none of the refused writes land.
	qjs, _ := jetstream.New(queen)
	narr, _ := qjs.Stream(ctx, bus.NarrStream)
	if _, err := narr.GetLastMsgForSubject(ctx, bus.Narr("job1", "h2", bus.KindEnd)); !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Fatalf("forged end stored: %v", err)
	}
}

// The generated nats-server block names every hive and its subjects.
func TestServerConfig(t *testing.T) {
	f, _ := natsauth.Generate([]string{"gpu1"})
	conf := natsauth.ServerConfig(f)
	for _, want := range []string{`user: "queen"`, `user: "gpu1"`, `"narr.*.gpu1.>"`, `"$KV.hives.gpu1"`, `"_INBOX_gpu1.>"`, "allow_responses",
		`account: "RBEE"`, `HIVE_gpu1: {`, `response_type: stream, response_threshold: "45s"`} {
		if !strings.Contains(conf, want) {
			t.Errorf("config lacks %s:\n%s", want, conf)
		}
	}
	// A hive reads no stream info that lists jobs, and makes no consumer.
	for _, banned := range []string{"STREAM.INFO.NARR", "CONSUMER.CREATE"} {
		if strings.Contains(conf, banned) {
			t.Errorf("config allows %s:\n%s", banned, conf)
		}
	}
	if _, err := natsauth.Generate([]string{"../x"}); err == nil {
		t.Fatal("bad hive id accepted")
	}
}

// cluster is a NATS server configured with the identities of the queen
// and hives h1 and h2, a queen's connection to it, rbee's streams and
// buckets, and h1's work queue.
func cluster(t *testing.T) (*server.Server, *nats.Conn, natsauth.File) {
	t.Helper()
	f, err := natsauth.Generate([]string{"h1", "h2"})
	if err != nil {
		t.Fatal(err)
	}
	s := testkit.NATS(t, func(o *server.Options) {
		if err := natsauth.Apply(o, f); err != nil {
			t.Fatal(err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	queen := testkit.Connect(t, s, nats.UserInfo(natsauth.QueenUser, f.QueenPassword))
	st, err := store.Open(ctx, queen, store.Options{Replicas: 1, Retention: time.Hour, HiveTTL: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.DispatchConsumer(ctx, api.Hive{ID: "h1", Slots: 1}); err != nil {
		t.Fatal(err)
	}
	return s, queen, f
}

// A hive cannot write where it may not publish by naming the place as the
// reply subject of what it may: JetStream answers on the reply subject,
// as a trusted client of the streams' account. Every answer a hive can
// ask for (an acknowledgement, a stored message with its headers, stream
// and consumer info, a pull's dispatches) aimed at an API key, another
// hive's work queue, narration and control subject, and the usage
// ledger: none lands.
func TestHiveRepliesStayInItsAccount(t *testing.T) {
	s, queen, f := cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hive := testkit.Connect(t, s, nats.UserInfo("h1", f.Hives["h1"]), nats.CustomInboxPrefix(bus.Inbox("h1")))
	h2 := testkit.Connect(t, s, nats.UserInfo("h2", f.Hives["h2"]), nats.CustomInboxPrefix(bus.Inbox("h2")))
	qjs, _ := jetstream.New(queen)

	// What the attacker stores under its own narration, to be read back
	// by a direct get: an admin key record, and a delete marker.
	forged := nats.NewMsg(bus.Narr("attack", "h1", bus.KindData))
	forged.Data = []byte(`{"id":"forged","name":"forged","scopes":["admin"],"hash":"00"}`)
	forged.Header.Set("KV-Operation", "DEL")
	js, _ := jetstream.New(hive)
	if _, err := js.PublishMsg(ctx, forged); err != nil {
		t.Fatal(err)
	}
	// A dispatch in h1's queue, for a pull that aims it elsewhere.
	if _, err := qjs.Publish(ctx, bus.Dispatch("h1"), []byte(`{"job_id":"attackjob"}`)); err != nil {
		t.Fatal(err)
	}
	// Another hive listening on its control subject, as hives do.
	ctl, err := h2.SubscribeSync(bus.Cancel("h2"))
	if err != nil {
		t.Fatal(err)
	}
	qctl, err := queen.SubscribeSync("ctl.hive.h2.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := h2.Flush(); err != nil {
		t.Fatal(err)
	}

	keys, err := qjs.KeyValue(ctx, bus.KeysBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := keys.Put(ctx, "victim", []byte(`{"id":"victim"}`)); err != nil {
		t.Fatal(err)
	}
	targets := []string{"$KV." + bus.KeysBucket + ".forged", "$KV." + bus.KeysBucket + ".victim", bus.Dispatch("h2"),
		bus.Narr("job9", "h2", bus.KindEnd), bus.Narr("job9", bus.QueenWriter, bus.KindEnd), "usage.victim.job9", bus.Cancel("h2")}
	asks := map[string]func(reply string) *nats.Msg{
		"a direct get": func(reply string) *nats.Msg {
			return &nats.Msg{Subject: bus.DirectGetLast(bus.NarrStream, bus.Narr("attack", "h1", bus.KindData)), Reply: reply}
		},
		"a narration acknowledgement": func(reply string) *nats.Msg {
			return &nats.Msg{Subject: bus.Narr("attack", "h1", bus.KindEvent), Reply: reply, Data: []byte(`{}`)}
		},
		"a heartbeat acknowledgement": func(reply string) *nats.Msg {
			return &nats.Msg{Subject: "$KV." + bus.HivesBucket + ".h1", Reply: reply, Data: []byte(`{}`)}
		},
		"stream info": func(reply string) *nats.Msg {
			return &nats.Msg{Subject: "$JS.API.STREAM.INFO.KV_" + bus.HivesBucket, Reply: reply}
		},
		"consumer info": func(reply string) *nats.Msg {
			return &nats.Msg{Subject: "$JS.API.CONSUMER.INFO." + bus.DispatchStream + "." + bus.DispatchConsumer("h1"), Reply: reply}
		},
		"a pull": func(reply string) *nats.Msg {
			return &nats.Msg{Subject: "$JS.API.CONSUMER.MSG.NEXT." + bus.DispatchStream + "." + bus.DispatchConsumer("h1"), Reply: reply,
				Data: []byte(`{"batch":1,"expires":200000000}`)}
		},
	}
	for name, ask := range asks {
		for _, target := range targets {
			if err := hive.PublishMsg(ask(target)); err != nil {
				t.Fatalf("%s to %s: %v", name, target, err)
			}
		}
	}
	if err := hive.Flush(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // the pulls' expiry and more

	if e, err := keys.Get(ctx, "forged"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("an API key was forged: %v %v", e, err)
	}
	if e, err := keys.Get(ctx, "victim"); err != nil || string(e.Value()) != `{"id":"victim"}` {
		t.Errorf("an API key was changed: %v %v", e, err)
	}
	for _, stream := range []string{bus.NarrStream, bus.DispatchStream, bus.UsageStream} {
		str, err := qjs.Stream(ctx, stream)
		if err != nil {
			t.Fatal(err)
		}
		for _, target := range targets {
			if m, err := str.GetLastMsgForSubject(ctx, target); !errors.Is(err, jetstream.ErrMsgNotFound) {
				t.Errorf("stream %s took a message on %s: %v %v", stream, target, m, err)
			}
		}
	}
	if m, err := ctl.NextMsg(100 * time.Millisecond); err == nil {
		t.Errorf("h2 got a control message from h1: %q %v", m.Data, m.Header)
	}
	if m, err := qctl.NextMsg(100 * time.Millisecond); err == nil {
		t.Errorf("the queens' account got h1's answer on %s: %q", m.Subject, m.Data)
	}
}

// A credentials file names hives by ids that are subject tokens: "*" in
// one would be every hive's account.
func TestLoadRefusesBadHiveIDs(t *testing.T) {
	for _, id := range []string{"*", ">", "a.b", "queen", ""} {
		path := filepath.Join(t.TempDir(), "auth.json")
		data, _ := json.Marshal(natsauth.File{QueenPassword: "pw", Hives: map[string]string{id: "secret"}})
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := natsauth.Load(path); err == nil {
			t.Errorf("hive id %q loaded", id)
		}
	}
}
