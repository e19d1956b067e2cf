// Command hive is the rbee agent on a GPU machine.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"rbee.dev/hive/internal/daemon"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := daemon.Run(ctx, os.Args[1:], os.Getenv, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "hive:", err)
		os.Exit(1)
	}
}
