package app_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"rbee.dev/shared/api"
)

// A browser that follows a job with a plain EventSource gets every event
// once, and after the end its connection closes for good: the reconnect
// that follows [DONE] is answered 204, which ends an EventSource, instead
// of another [DONE] and another reconnect every few seconds.
func TestEventSourceClosesAfterTheEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a browser")
	}
	browser := chromium(t)
	ns := mustNATS(t)
	base, _ := mustQueen(t, ns.ClientURL())
	mustHive(t, base, ns.ClientURL(), "h1")
	job := submit(t, base, api.JobRequest{Operation: api.OpHiveCheck, Hive: "h1", Payload: &api.HiveCheck{Events: intp(20)}})
	want, done := sseQuiet(context.Background(), base, job, 0, 0)
	if !done {
		t.Fatal("the job's stream did not end")
	}

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browser), chromedp.NoSandbox, chromedp.Flag("headless", "new"), chromedp.UserDataDir(t.TempDir()))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancelT := context.WithTimeout(ctx, time.Minute)
	defer cancelT()

	follow := `window.got = []; window.opens = 0; window.errors = 0;
		window.es = new EventSource("/v1/jobs/` + job + `/stream");
		es.onopen = () => opens++;
		es.onerror = () => errors++;
		for (const kind of ["narration", "data", "end"]) es.addEventListener(kind, (e) => got.push([kind, e.lastEventId]));`
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/"), chromedp.Evaluate[chromedp.Void](follow)); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](`es.readyState === EventSource.CLOSED`, chromedp.WithPollingTimeout(15*time.Second))); err != nil {
		t.Fatalf("the EventSource did not close after the end: %v", err)
	}
	// Closed stays closed: no reconnect later.
	time.Sleep(3 * time.Second)
	state, err := chromedp.Run(ctx, chromedp.Evaluate[string](`JSON.stringify({got, opens, state: es.readyState})`))
	if err != nil {
		t.Fatal(err)
	}
	var seen struct {
		Got   [][2]string
		Opens int
		State int
	}
	if err := json.Unmarshal([]byte(state), &seen); err != nil {
		t.Fatal(err)
	}
	if seen.Opens != 1 || seen.State != 2 {
		t.Fatalf("%d connections, state %d; want one connection, closed", seen.Opens, seen.State)
	}
	if len(seen.Got) != len(want) {
		t.Fatalf("the browser got %d events, want %d", len(seen.Got), len(want))
	}
	for i, f := range want {
		if seen.Got[i][0] != f.Event || seen.Got[i][1] != strconv.FormatUint(f.ID, 10) {
			t.Fatalf("event %d: browser %v, stream %s %d", i, seen.Got[i], f.Event, f.ID)
		}
	}

	// The same from outside: a resume at the end is 204, one before it
	// gets the end.
	end := want[len(want)-1].ID
	for _, c := range []struct {
		after uint64
		code  int
	}{{end, http.StatusNoContent}, {end + 5, http.StatusNoContent}, {end - 1, http.StatusOK}} {
		req, _ := http.NewRequest("GET", base+"/v1/jobs/"+job+"/stream", nil)
		req.Header.Set("Last-Event-ID", strconv.FormatUint(c.after, 10))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.code {
			t.Fatalf("resume after %d (end %d): %d, want %d", c.after, end, resp.StatusCode, c.code)
		}
	}
}
