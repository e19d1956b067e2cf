// Command rbee-worker is rbee's reference inference worker: a small,
// CPU-only, deterministic OpenAI-compatible server for tests and demos. It
// is not a language model; see package refworker.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"rbee.dev/hive/internal/refworker"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := refworker.Main(ctx, os.Args[1:], os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "rbee-worker:", err)
		os.Exit(1)
	}
}
