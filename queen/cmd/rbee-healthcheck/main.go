// Command rbee-healthcheck asks one URL whether a service is healthy and
// exits 0 on a 2xx answer, 1 on anything else. It exists for container
// images built FROM scratch, which have no curl or wget for a Docker
// HEALTHCHECK: the queen's /readyz, a hive's /healthz on its metrics
// address and nats-server's /healthz on its monitoring port.
//
//	rbee-healthcheck [-timeout 3s] http://127.0.0.1:7833/readyz
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("rbee-healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	timeout := fs.Duration("timeout", 3*time.Second, "give up after this long")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: rbee-healthcheck [-timeout 3s] URL")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil || fs.NArg() != 1 {
		if err == nil {
			fs.Usage()
		}
		return 2
	}
	if err := check(fs.Arg(0), *timeout); err != nil {
		fmt.Fprintln(stderr, "rbee-healthcheck:", err)
		return 1
	}
	return 0
}

// check GETs url and accepts any 2xx answer. The body is read (a little of
// it) only so that an error message can say what the service answered.
func check(url string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("%s answered %s: %s", url, resp.Status, body)
	}
	return nil
}
