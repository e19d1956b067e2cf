package relay

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"rbee.dev/shared/api"
	"rbee.dev/shared/bus"
)

// BenchmarkJudge is what judging one frame costs a reader: a typical line
// of output, and a hive_check event with a 1 KiB payload. "headers" is a
// frame as writers store it now, judged by its headers with its body
// checked against them; "headers+decode" adds what nats.go spends decoding
// the headers of each message it receives, which frames without headers
// did not cost; "body" is a frame stored without headers, judged by its
// body alone.
func BenchmarkJudge(b *testing.B) {
	const job = "0193a1b2c3d4e5f6a7b8c9d0"
	for _, payload := range []int{0, 1024} {
		data, _ := json.Marshal(api.Event{JobID: job, Seq: 12345, Time: time.Now(), Actor: "hive", Action: "stdout",
			Level: api.LevelInfo, Message: "a line of output from the job", Attempt: 1, Stream: "stdout", Payload: strings.Repeat("x", payload)})
		msg := bus.Meta{Job: job, Writer: "h1", Kind: bus.KindEvent, Seq: 12345, Attempt: 1}.Msg(data)
		raw := encodeHeader(b, msg.Header)
		name := map[int]string{0: "line", 1024: "payload_1KiB"}[payload]
		for _, mode := range []string{"headers", "headers+decode", "body"} {
			b.Run(name+"/"+mode, func(b *testing.B) {
				t := &trust{hives: map[int]string{1: "h1"}, seq: 12000}
				b.SetBytes(int64(len(data)))
				b.ReportAllocs()
				for i := 0; i < b.N; i++ {
					f := Frame{Writer: "h1", Kind: bus.KindEvent, Data: data}
					switch mode {
					case "headers":
						f.Header = msg.Header
					case "headers+decode":
						h, err := nats.DecodeHeadersMsg(raw)
						if err != nil {
							b.Fatal(err)
						}
						f.Header = h
					}
					if r := t.judge(job, &f, nil); r != "" {
						b.Fatal(r)
					}
				}
			})
		}
	}
}

// encodeHeader is h as NATS sends it.
func encodeHeader(tb testing.TB, h nats.Header) []byte {
	tb.Helper()
	var sb strings.Builder
	sb.WriteString("NATS/1.0\r\n")
	for k, vs := range h {
		for _, v := range vs {
			sb.WriteString(k + ": " + v + "\r\n")
		}
	}
	sb.WriteString("\r\n")
	return []byte(sb.String())
}
