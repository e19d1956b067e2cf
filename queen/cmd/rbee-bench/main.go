// Command rbee-bench benchmarks a single-machine rbee cluster: it starts the
// real queen and hive binaries, drives them over HTTP and SSE, verifies
// every stream and prints a Markdown report. See BENCHMARKS.md.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"rbee.dev/queen/internal/bench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	code := bench.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
