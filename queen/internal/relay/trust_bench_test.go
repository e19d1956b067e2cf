package relay

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"rbee.dev/shared/api"
	"rbee.dev/shared/bus"
)

// BenchmarkJudge is what reading one frame's body costs a reader: a typical
// line of output, and a hive_check event with a 1 KiB payload.
func BenchmarkJudge(b *testing.B) {
	for _, payload := range []int{0, 1024} {
		data, _ := json.Marshal(api.Event{JobID: "0193a1b2c3d4e5f6a7b8c9d0", Seq: 12345, Time: time.Now(), Actor: "hive", Action: "stdout",
			Level: api.LevelInfo, Message: "a line of output from the job", Attempt: 1, Stream: "stdout", Payload: strings.Repeat("x", payload)})
		b.Run(map[int]string{0: "line", 1024: "payload_1KiB"}[payload], func(b *testing.B) {
			t := &trust{hives: map[int]string{1: "h1"}, seq: 12000}
			b.SetBytes(int64(len(data)))
			for i := 0; i < b.N; i++ {
				f := Frame{Writer: "h1", Kind: bus.KindEvent, Data: data}
				if r := t.judge("0193a1b2c3d4e5f6a7b8c9d0", &f, nil); r != "" {
					b.Fatal(r)
				}
			}
		})
	}
}
