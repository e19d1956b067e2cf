package cli

import (
	"io"

	"rbee.dev/shared/api"
)

// RenderDownload shows a download's events as `rbee model download` does,
// with bars as on a terminal or plain lines as in a pipe, so tests can see
// the bar without a terminal.
func RenderDownload(w io.Writer, bars bool, events []api.Event) {
	v := &downloadView{w: w, bars: bars}
	for _, ev := range events {
		v.event(ev)
	}
	v.finish()
}
