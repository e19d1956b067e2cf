package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"

	"rbee.dev/hive/agent"
	"rbee.dev/queen/internal/app"
	"rbee.dev/shared/api"
)

// chromium finds a headless-capable browser; CI installs Debian's chromium.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "chromium-headless-shell", "google-chrome", "chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("no chromium on PATH; .ci/run installs it")
	}
	t.Skip("no chromium on PATH: the console's browser test needs chromium (apt-get install chromium); skipping")
	return ""
}

// recordedSMI writes a script that answers the hive's GPU query with
// recorded nvidia-smi output (one RTX 4090) and returns its path.
func recordedSMI(t *testing.T) string {
	t.Helper()
	csv, err := os.ReadFile(filepath.Join("..", "..", "..", "hive", "internal", "inventory", "testdata", "gpus-rtx4090.csv"))
	if err != nil {
		t.Fatalf("recorded nvidia-smi output: %v", err)
	}
	script := "#!/bin/sh\ncase \"$1\" in\n--query-gpu=*) printf '%s' '" + string(csv) + "' ;;\nesac\n"
	path := filepath.Join(t.TempDir(), "nvidia-smi")
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// screenshotDir is where the console's screenshots go: $RBEE_SCREENSHOTS
// when set, else the test's temporary directory.
func screenshotDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("RBEE_SCREENSHOTS")
	if dir == "" {
		dir = t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("console screenshots in %s", dir)
	return dir
}

// cutProxy forwards TCP connections to a server and can cut every open one
// at once, as a network drop would.
type cutProxy struct {
	ln    net.Listener
	mu    sync.Mutex
	conns map[net.Conn]bool
	cuts  int
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, conns: map[net.Conn]bool{}}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns[c], p.conns[up] = true, true
			p.mu.Unlock()
			go func() { _, _ = io.Copy(up, c); up.Close() }()
			go func() { _, _ = io.Copy(c, up); c.Close() }()
		}
	}()
	t.Cleanup(func() { ln.Close(); p.cut() })
	return p
}

func (p *cutProxy) url() string { return "http://" + p.ln.Addr().String() }

// cut closes every connection open now.
func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
	p.conns = map[net.Conn]bool{}
	p.cuts++
}

// The console in a real browser against a real queen, an in-process hive
// that reads recorded nvidia-smi output, and the reference worker: GPU
// charts fill from heartbeats, a model downloads with its progress bar to
// 100%, a worker spawns ready, the playground streams tokens and stops, a
// job's narration shows, and a key made in the console works over plain
// HTTP. Each page is screenshotted.
func TestConsoleInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a browser, a cluster and a worker")
	}
	browser := chromium(t)
	bin := t.TempDir()
	if out, err := exec.Command("go", "build", "-o", filepath.Join(bin, "rbee-worker"), "rbee.dev/hive/cmd/rbee-worker").CombinedOutput(); err != nil {
		t.Fatalf("build rbee-worker: %v\n%s", err, out)
	}
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	smi := recordedSMI(t)

	// The model arrives in a few pieces, so the download narrates progress.
	model := tinyGGUF(t)
	// /slow.gguf takes seconds, for a job that runs while the network drops.
	files := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		piece, pause := 1024, 50*time.Millisecond
		if r.URL.Path == "/slow.gguf" {
			piece, pause = 256, 150*time.Millisecond
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(model)))
		for off := 0; off < len(model); off += piece {
			if _, err := w.Write(model[off:min(off+piece, len(model))]); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			time.Sleep(pause)
		}
	}))
	t.Cleanup(files.Close)

	ns := mustNATS(t)
	base, _ := mustQueen(t, ns.ClientURL(), func(c *app.Config) {
		c.AdminKey = testAdminKey
		c.Infer.Aliases = map[string]string{"bee": "tiny"}
	})
	t.Setenv("RBEE_NVIDIA_SMI", smi) // read when the hive starts
	mustHive(t, base, ns.ClientURL(), "h1", func(c *agent.Config) { c.Slots = 3 })
	shots := screenshotDir(t)
	// The browser reaches the queen through a proxy that can drop the
	// network under it.
	proxy := newCutProxy(t, strings.TrimPrefix(base, "http://"))

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browser), chromedp.NoSandbox, chromedp.Flag("headless", "new"),
		chromedp.WindowSize(1280, 1000), chromedp.UserDataDir(t.TempDir()))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancelT := context.WithTimeout(ctx, 3*time.Minute)
	defer cancelT()

	eval := func(t *testing.T, expr string) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr))
		if err != nil {
			t.Fatalf("evaluate %s: %v", expr, err)
		}
		return s
	}
	poll := func(t *testing.T, what, expr string, d time.Duration) {
		t.Helper()
		if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(d))); err != nil {
			t.Fatalf("%s: %v\nthe page says: %s", what, err, eval(t, `document.querySelector("#error").textContent + " | " + document.querySelector("main").innerText.slice(0, 3000)`))
		}
	}
	step := func(t *testing.T, what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, actions...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	shot := func(t *testing.T, name string) {
		t.Helper()
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		path := filepath.Join(shots, name+".png")
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot %s", path)
	}
	open := func(t *testing.T, page string) {
		t.Helper()
		step(t, "open "+page, chromedp.Evaluate[chromedp.Void](`window.before = rb.refreshed; location.hash = "#/`+page+`"`))
		name, _, _ := strings.Cut(page, "/")
		// Shown, and refreshed since: what it shows is not left from before.
		poll(t, "page "+page+" shown", `!document.querySelector("#page-`+name+`").hidden && rb.refreshed > window.before`, 10*time.Second)
	}

	// No key yet: the API refuses and the page says why; the key is entered
	// once and kept.
	step(t, "open the console", chromedp.Navigate(proxy.url()+"/"), chromedp.WaitVisible(chromedp.ID("error")))
	if msg := eval(t, `document.querySelector("#error").textContent`); !strings.Contains(msg, "API key") {
		t.Errorf("without a key the page says %q", msg)
	}
	step(t, "enter the key", chromedp.SendKeys(chromedp.ID("key"), testAdminKey), chromedp.Click(chromedp.CSS("#keyform button")))

	t.Run("cluster", func(t *testing.T) {
		open(t, "cluster")
		poll(t, "hive card", `document.querySelector("#hives").innerText.includes("h1")`, 15*time.Second)
		// Heartbeats come every ~0.7 s here; each adds a point per line.
		poll(t, "chart points", `(() => { const l = document.querySelector("#hives svg.chart polyline.util");
			return l && l.getAttribute("points").trim().split(" ").length >= 3 })()`, 20*time.Second)
		card := eval(t, `document.querySelector("#hives").innerText`)
		for _, want := range []string{"NVIDIA GeForce RTX 4090", "71 °C", "412.37 W", "97%", "busy 97%, memory 77%"} {
			if !strings.Contains(card, want) {
				t.Errorf("hive card lacks %q:\n%s", want, card)
			}
		}
		mem := eval(t, `document.querySelector("#hives svg.chart polyline.mem").getAttribute("points")`)
		// 18932 of 24564 MiB used is 77%: y = 80 - 0.77*80 = 18.3.
		if !strings.Contains(mem, ",18.3") {
			t.Errorf("memory line %q is not at 77%%", mem)
		}
		shot(t, "cluster")
	})

	t.Run("download", func(t *testing.T) {
		open(t, "models")
		poll(t, "hive offered", `document.querySelector("#dl-hive").value === "h1"`, 10*time.Second)
		step(t, "download", chromedp.SendKeys(chromedp.ID("dl-source"), files.URL+"/tiny.gguf"),
			chromedp.Click(chromedp.CSS("#dlform button[type=submit]")))
		// Record every value the bar takes on the way.
		step(t, "watch the bar", chromedp.Evaluate[chromedp.Void](`window.seen = [];
			(function watch() { const v = document.querySelector("#dl-progress").value; if (window.seen[window.seen.length-1] !== v) window.seen.push(v);
			if (v < 100) requestAnimationFrame(watch); })()`))
		poll(t, "download done", `document.querySelector("#dl-progress").value === 100 && document.querySelector("#dl-status").textContent.startsWith("done")`, 30*time.Second)
		seen := eval(t, `JSON.stringify(window.seen)`)
		if strings.Count(seen, ",") < 2 {
			t.Errorf("the progress bar jumped straight to the end: %s", seen)
		}
		poll(t, "model listed with GGUF facts", `document.querySelector("#models tbody").innerText.includes("tiny") && document.querySelector("#models tbody").innerText.includes("llama")`, 10*time.Second)
		shot(t, "models")
	})

	t.Run("spawn", func(t *testing.T) {
		open(t, "models")
		poll(t, "model offered", `[...document.querySelector("#sp-model").options].some(o => o.value === "tiny")`, 10*time.Second)
		step(t, "spawn", chromedp.SetValue(chromedp.ID("sp-model"), "tiny"),
			chromedp.SendKeys(chromedp.ID("sp-backend"), "reference"), chromedp.SendKeys(chromedp.ID("sp-ctx"), "512"),
			chromedp.Click(chromedp.CSS(`#sp-gpus input[value="0"]`)), chromedp.Click(chromedp.CSS("#spform button[type=submit]")))
		poll(t, "worker ready", `document.querySelector("#sp-status").textContent.includes("ready")`, 60*time.Second)
		poll(t, "worker listed ready", `document.querySelector("#workers tbody").innerText.includes("ready")`, 10*time.Second)
		row := eval(t, `document.querySelector("#workers tbody tr").innerText`)
		if !strings.Contains(row, "tiny") || !strings.Contains(row, "reference") || !strings.Contains(row, "512") {
			t.Errorf("worker row: %q", row)
		}
		step(t, "follow its log", chromedp.Click(chromedp.CSS(`#workers tbody tr button`)))
		poll(t, "worker log", `document.querySelector("#wlog").textContent.includes("tiny")`, 15*time.Second)
		shot(t, "workers")
	})

	t.Run("playground", func(t *testing.T) {
		open(t, "playground")
		poll(t, "model and its alias offered", `(() => { const o = [...document.querySelector("#pl-model").options].map(o => o.value);
			return o.includes("tiny") && o.includes("bee") })()`, 10*time.Second)
		step(t, "ask", chromedp.SetValue(chromedp.ID("pl-model"), "tiny"), chromedp.SetValue(chromedp.ID("pl-max"), "400"),
			chromedp.SendKeys(chromedp.ID("pl-msg"), "tell me about bees"), chromedp.Click(chromedp.ID("pl-send")))
		poll(t, "tokens stream in", `document.querySelector("#transcript .assistant .content").textContent.split(" ").length >= 5`, 30*time.Second)
		step(t, "stop", chromedp.Click(chromedp.ID("pl-stop")))
		poll(t, "stopped", `document.querySelector("#transcript").innerText.includes("[stopped]") && !document.querySelector("#pl-send").disabled`, 10*time.Second)
		stats := eval(t, `document.querySelector("#pl-stats").textContent`)
		if !strings.Contains(stats, "first token") || !strings.Contains(stats, "tokens/s") {
			t.Errorf("stats: %q", stats)
		}
		words, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelector("#transcript .assistant .content").textContent.split(" ").length`))
		if err != nil || words >= 300 {
			t.Errorf("the answer ran to %d words after stop (%v)", words, err)
		}
		for _, lang := range []struct{ tab, want string }{{"curl", "/v1/chat/completions"}, {"python", "from openai import OpenAI"}, {"go", "openai.NewClient"}} {
			step(t, "tab "+lang.tab, chromedp.Click(chromedp.CSS(`[data-lang="`+lang.tab+`"]`)))
			if code := eval(t, `document.querySelector("#pl-code").textContent`); !strings.Contains(code, lang.want) || !strings.Contains(code, "tiny") {
				t.Errorf("%s code:\n%s", lang.tab, code)
			}
		}
		shot(t, "playground")

		// A generation that fails after its first tokens (an operator
		// cancels it here) says why in its bubble and is not kept as an
		// answer: the conversation is as before the question.
		step(t, "ask again", chromedp.SendKeys(chromedp.ID("pl-msg"), "and wasps?"), chromedp.Click(chromedp.ID("pl-send")))
		poll(t, "the second answer streams", `(() => { const a = document.querySelectorAll("#transcript .msg.assistant .content");
			return a.length === 2 && a[1].textContent.split(" ").length >= 3 })()`, 30*time.Second)
		var running api.JobList
		req, _ := http.NewRequest("GET", base+"/v1/jobs?operation=infer&state=running", nil)
		req.Header.Set("Authorization", "Bearer "+testAdminKey)
		if resp, err := http.DefaultClient.Do(req); err != nil {
			t.Fatal(err)
		} else {
			_ = json.NewDecoder(resp.Body).Decode(&running)
			resp.Body.Close()
		}
		if len(running.Jobs) != 1 {
			t.Fatalf("%d running inference jobs, want the playground's one", len(running.Jobs))
		}
		req, _ = http.NewRequest("DELETE", base+"/v1/jobs/"+running.Jobs[0].JobID, nil)
		req.Header.Set("Authorization", "Bearer "+testAdminKey)
		if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusAccepted {
			t.Fatalf("cancel the playground's job: %v %v", resp, err)
		} else {
			resp.Body.Close()
		}
		poll(t, "the failure shown", `(() => { const a = document.querySelectorAll("#transcript .msg.assistant .content");
			return a.length === 2 && a[1].querySelector("em.failed") !== null && !document.querySelector("#pl-send").disabled })()`, 15*time.Second)
		if h := eval(t, `JSON.stringify(play.history.map(m => m.role))`); h != `["user","assistant"]` {
			t.Errorf("the conversation after a failed answer: %s", h)
		}
	})

	t.Run("jobs", func(t *testing.T) {
		open(t, "jobs")
		poll(t, "jobs listed", `document.querySelector("#jobs tbody").innerText.includes("model_download")`, 10*time.Second)
		step(t, "open the download", chromedp.Evaluate[chromedp.Void](`[...document.querySelectorAll("#jobs tbody tr")].find(r => r.cells[1].textContent === "model_download").querySelector("a").click()`))
		poll(t, "narration to the end", `document.querySelector("#nstate").textContent === "done"`, 15*time.Second)
		if n := eval(t, `String(document.querySelectorAll("#nlog progress").length)`); n == "0" {
			t.Error("the download's narration shows no progress bar")
		}
		if eval(t, `String(!!document.querySelector("#nlog table.data"))`) != "true" {
			t.Error("the download's result is not a table")
		}
		if h := eval(t, `location.hash`); !strings.HasPrefix(h, "#/jobs/") {
			t.Errorf("an open job's URL is %q", h)
		}

		// Any other operation by hand: five check events, each a bar.
		step(t, "submit a check", chromedp.Evaluate[chromedp.Void](`document.querySelector("#page-jobs details").open = true`),
			chromedp.SetValue(chromedp.ID("op"), "hive_check"), chromedp.SendKeys(chromedp.ID("op-hive"), "h1"),
			chromedp.SendKeys(chromedp.ID("op-fields"), `{"events": 5}`), chromedp.Click(chromedp.CSS("#submit button")))
		poll(t, "check narrated to the end", `document.querySelector("#nstate").textContent === "done" && document.querySelector("#nlog").innerText.includes("check 5 of 5")`, 15*time.Second)
		if n := eval(t, `String(document.querySelectorAll("#nlog progress").length)`); n != "5" {
			t.Errorf("%s progress bars for five check events", n)
		}
		shot(t, "jobs")

		// A refused submission's reason stays through the page's refreshes.
		step(t, "submit a bad job", chromedp.SetValue(chromedp.ID("op"), "model_get"),
			chromedp.SetValue(chromedp.ID("op-fields"), `{}`), chromedp.Click(chromedp.CSS("#submit button")))
		poll(t, "the refusal shown", `document.querySelector("#error").textContent.includes("model_id")`, 10*time.Second)
		step(t, "refreshes pass", chromedp.Evaluate[chromedp.Void](`window.before = rb.refreshed`))
		poll(t, "two refreshes", `rb.refreshed >= window.before + 2`, 10*time.Second)
		if msg := eval(t, `document.querySelector("#error").hidden ? "" : document.querySelector("#error").textContent`); !strings.Contains(msg, "model_id") {
			t.Errorf("after two refreshes the error bar says %q", msg)
		}

		// A job link that does not decode, or names no job, says so; the
		// console goes on.
		open(t, "jobs/%E0%A4%A")
		poll(t, "no such job", `document.querySelector("#nstate").textContent === "not found"`, 10*time.Second)
		open(t, "jobs/doesnotexist123")
		poll(t, "no such job", `document.querySelector("#nstate").textContent === "not found"`, 10*time.Second)
	})

	// A long answer in flight shows in the inference queue under its model
	// (GET /v1/queue), as running on its worker.
	t.Run("queue", func(t *testing.T) {
		qctx, stop := context.WithCancel(context.Background())
		defer stop()
		go func() {
			req, _ := http.NewRequestWithContext(qctx, "POST", base+"/v1/chat/completions",
				strings.NewReader(`{"model":"tiny","messages":[{"role":"user","content":"a long one"}],"max_tokens":1000,"stream":true}`))
			req.Header.Set("Authorization", "Bearer "+testAdminKey)
			req.Header.Set("Content-Type", "application/json")
			if resp, err := http.DefaultClient.Do(req); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
		open(t, "jobs")
		poll(t, "queued answer", `(() => { const c = document.querySelector("#queue [aria-label='queue of tiny']");
			return c && c.querySelector("h4").innerText.includes("1 running") })()`, 15*time.Second)
		shot(t, "queue")
		stop()
		poll(t, "queue empties", `document.querySelector("#queue").innerText.includes("No inference request")`, 15*time.Second)
	})

	// A job followed while the network drops: the stream resumes from
	// the last event it showed, so every event shows once and in order.
	t.Run("resume", func(t *testing.T) {
		var created struct {
			JobID string `json:"job_id"`
		}
		if code := doHeaders(t, "POST", base+"/v1/jobs", map[string]any{"operation": "model_download", "hive": "h1",
			"source": files.URL + "/slow.gguf", "model_id": "slow"}, map[string]string{"Authorization": "Bearer " + testAdminKey}, &created); code != 201 {
			t.Fatalf("submit: %d", code)
		}
		open(t, "jobs/"+created.JobID)
		poll(t, "some progress", `document.querySelectorAll("#nlog progress").length >= 2`, 15*time.Second)
		proxy.cut()
		poll(t, "narration to the end", `document.querySelector("#nstate").textContent === "done"`, 30*time.Second)
		seqs := eval(t, `JSON.stringify([...document.querySelectorAll("#nlog .meta")].map(m => +m.textContent.match(/#(\d+)/)[1]))`)
		var got []int
		if err := json.Unmarshal([]byte(seqs), &got); err != nil {
			t.Fatal(err)
		}
		for i, n := range got {
			if n != i+1 {
				t.Fatalf("after the drop the narration shows events %v, not 1 to %d once each", got, len(got))
			}
		}
		if len(got) < 5 {
			t.Fatalf("narration %v", got)
		}
		t.Logf("%d events across the drop", len(got))
	})

	t.Run("keys", func(t *testing.T) {
		open(t, "keys")
		poll(t, "admin form", `!document.querySelector("#keys-admin").hidden`, 10*time.Second)
		step(t, "create a key", chromedp.SendKeys(chromedp.ID("k-name"), "console-made"), chromedp.SendKeys(chromedp.ID("k-rpm"), "100"),
			chromedp.Click(chromedp.CSS("#kform button[type=submit]")))
		poll(t, "secret shown", `document.querySelector("#k-secret").textContent.length > 10`, 10*time.Second)
		secret := eval(t, `document.querySelector("#k-secret").textContent`)
		poll(t, "key listed", `document.querySelector("#keys tbody").innerText.includes("console-made")`, 10*time.Second)

		// The new key works with a plain HTTP client, as curl would use it.
		req, _ := http.NewRequest("POST", base+"/v1/chat/completions",
			strings.NewReader(`{"model":"tiny","messages":[{"role":"user","content":"hi"}],"max_tokens":3}`))
		req.Header.Set("Authorization", "Bearer "+secret)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body bytes.Buffer
		_, _ = body.ReadFrom(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(body.String(), `"completion_tokens":3`) {
			t.Fatalf("chat with the new key: %d %s", resp.StatusCode, body.String())
		}
		// It holds only the scope chosen in the form.
		req, _ = http.NewRequest("GET", base+"/v1/keys", nil)
		req.Header.Set("Authorization", "Bearer "+secret)
		if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 403 {
			t.Errorf("the infer key lists keys: %v %v", resp, err)
		} else {
			resp.Body.Close()
		}

		step(t, "reload usage", chromedp.Evaluate[chromedp.Void](`refreshUsage(true)`))
		poll(t, "usage chart", `document.querySelectorAll("#uchart svg rect").length > 0 && document.querySelector("#usage tbody").innerText.includes("console-made")`, 15*time.Second)
		shot(t, "keys")

		// With the new key the console shows that key's own usage only.
		step(t, "use the new key", chromedp.SendKeys(chromedp.ID("key"), secret), chromedp.Click(chromedp.CSS("#keyform button")))
		step(t, "reload usage", chromedp.Evaluate[chromedp.Void](`refreshUsage(true)`))
		poll(t, "own usage", `!document.querySelector("#keys-own").hidden && document.querySelector("#keys-admin").hidden &&
			document.querySelector("#usage tbody").innerText.includes("console-made")`, 10*time.Second)
		step(t, "back to the admin key", chromedp.SendKeys(chromedp.ID("key"), testAdminKey), chromedp.Click(chromedp.CSS("#keyform button")))

		// Revoked in the console, the key is refused at once.
		open(t, "keys")
		step(t, "say yes", chromedp.Evaluate[chromedp.Void](`window.confirm = () => true`))
		poll(t, "admin form", `!document.querySelector("#keys-admin").hidden`, 10*time.Second)
		step(t, "revoke", chromedp.Click(chromedp.CSS(`#keys tbody button[aria-label="revoke console-made"]`)))
		poll(t, "key gone", `!document.querySelector("#keys tbody").innerText.includes("console-made")`, 10*time.Second)
		req, _ = http.NewRequest("GET", base+"/v1/models", nil)
		req.Header.Set("Authorization", "Bearer "+secret)
		if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 401 {
			t.Errorf("the revoked key: %v %v", resp, err)
		} else {
			resp.Body.Close()
		}
	})

	t.Run("stop and delete", func(t *testing.T) {
		open(t, "models")
		step(t, "say yes to every question", chromedp.Evaluate[chromedp.Void](`window.confirm = () => true`))
		step(t, "stop the worker", chromedp.Click(chromedp.CSS(`#workers tbody button[aria-label^="stop "]`)))
		poll(t, "worker gone", `document.querySelector("#workers tbody").children.length === 0`, 20*time.Second)
		step(t, "delete a model", chromedp.Click(chromedp.CSS(`#models tbody button[aria-label="delete slow on h1"]`)))
		poll(t, "model gone", `!document.querySelector("#models tbody").innerText.includes("slow") && document.querySelector("#models tbody").innerText.includes("tiny")`, 20*time.Second)
	})

	// Every control has a name a screen reader says, and the pages are
	// reached from the keyboard.
	t.Run("keyboard and labels", func(t *testing.T) {
		unlabelled := eval(t, `[...document.querySelectorAll("input, select, textarea, button")]
			.filter(c => c.type !== "hidden" && !(c.labels && c.labels.length) && !c.getAttribute("aria-label") && !c.textContent.trim())
			.map(c => c.id || c.outerHTML.slice(0, 80)).join(", ")`)
		if unlabelled != "" {
			t.Errorf("controls without a label: %s", unlabelled)
		}
		if n, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("input, select, textarea").length`)); err != nil || n < 25 {
			t.Errorf("checked only %d form controls (%v)", n, err)
		}
		open(t, "cluster")
		step(t, "tab to a page and press enter", chromedp.Evaluate[chromedp.Void](`document.querySelector('nav a[data-page="keys"]').focus()`),
			chromedp.KeyEvent("\r"))
		poll(t, "keys page by keyboard", `location.hash === "#/keys" && !document.querySelector("#page-keys").hidden`, 5*time.Second)
	})

	t.Run("phone", func(t *testing.T) {
		step(t, "narrow", chromedp.EmulateViewport(390, 844))
		// What the queen says may be one long word, a checksum say.
		open(t, "models")
		step(t, "a long status", chromedp.Evaluate[chromedp.Void](`document.querySelector("#dl-status").textContent = "failed: expected " + "ab".repeat(32) + " got " + "cd".repeat(32)`))
		for _, page := range []string{"models", "playground", "jobs", "keys"} {
			if page != "models" {
				open(t, page)
			}
			if w, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.documentElement.scrollWidth`)); err != nil || w > 400 {
				widest := eval(t, `[...document.querySelectorAll("#page-`+page+` *")].filter(e => e.getBoundingClientRect().right > 400)
					.slice(0, 5).map(e => e.tagName + "#" + e.id + "." + e.className).join(" ")`)
				t.Errorf("at phone width %s is %d px wide (%v): %s", page, w, err, widest)
			}
		}
		open(t, "cluster")
		poll(t, "hive card with its model", `document.querySelector("#hives").innerText.includes("tiny")`, 10*time.Second)
		if w, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.documentElement.scrollWidth`)); err != nil || w > 400 {
			t.Errorf("at phone width the page is %d px wide (%v)", w, err)
		}
		shot(t, "cluster-phone")

		// The system's dark setting turns the console dark.
		if _, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
			Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}}}); err != nil {
			t.Fatal(err)
		}
		if bg := eval(t, `getComputedStyle(document.body).backgroundColor`); bg != "rgb(22, 22, 26)" {
			t.Errorf("dark background is %s", bg)
		}
		shot(t, "cluster-phone-dark")
	})
}
