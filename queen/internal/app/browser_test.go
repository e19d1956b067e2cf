package app_test

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"rbee.dev/queen/internal/app"
)

// chromium finds a headless-capable browser; CI installs Debian's chromium.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("no chromium on PATH; .ci/run installs it")
	}
	t.Skip("no chromium on PATH")
	return ""
}

// The web UI in a real browser: it asks for a key, lists the hive once it
// has one, submits a job and shows its narration live to the end.
func TestWebUIInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a browser")
	}
	browser := chromium(t)
	ns := mustNATS(t)
	base, _ := mustQueen(t, ns.ClientURL(), func(c *app.Config) { c.AdminKey = testAdminKey })
	mustHive(t, base, ns.ClientURL(), "h1")

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browser), chromedp.NoSandbox, chromedp.Flag("headless", "new"),
		chromedp.UserDataDir(t.TempDir()))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancelT := context.WithTimeout(ctx, 60*time.Second)
	defer cancelT()

	poll := func(expr string) error {
		_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(15*time.Second)))
		return err
	}
	text := func(sel string) string {
		s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return s
	}
	step := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}

	step("open", chromedp.Do(ctx, chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.ID("error"))))
	// No key yet: the API refuses and the page says why.
	errText := text("#error")
	step("enter the key", chromedp.Do(ctx, chromedp.SendKeys(chromedp.ID("key"), testAdminKey), chromedp.Click(chromedp.CSS("#keyform button"))))
	if err := poll(`document.querySelector("#hives tbody").innerText.includes("h1")`); err != nil {
		t.Fatalf("hive never listed: %v; the page says %q", err, text("#error"))
	}
	step("submit a job", chromedp.Do(ctx,
		chromedp.SetValue(chromedp.ID("op"), "hive_check"),
		chromedp.SendKeys(chromedp.ID("hive"), "h1"),
		chromedp.SendKeys(chromedp.ID("fields"), `{"events": 5}`),
		chromedp.Click(chromedp.CSS("#submit button"))))
	if err := poll(`document.querySelector("#nstate").textContent === "done"`); err != nil {
		t.Fatalf("narration never ended done: %v\n%s", err, text("#nlog"))
	}
	state, logText := text("#nstate"), text("#nlog")
	lines, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelector("#nlog").children.length`))
	step("count lines", err)
	step("job listed", poll(`document.querySelector("#jobs tbody").innerText.includes("hive_check")`))
	jobs := text("#jobs tbody")
	if !strings.Contains(errText, "API key") {
		t.Errorf("without a key the page says %q", errText)
	}
	// job_created, started, five check events, end.
	if state != "done" || lines != 8 || !strings.Contains(logText, "→ done") || !strings.Contains(logText, "#8") {
		t.Fatalf("narration (%d lines, state %q):\n%s", lines, state, logText)
	}
	if !strings.Contains(jobs, "done") {
		t.Fatalf("jobs table:\n%s", jobs)
	}
}
