// Command rbee is the command line of an rbee cluster: it submits and
// follows jobs, lists hives and runs commands through a queen.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"rbee.dev/queen/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// After the first signal, restore the default handling, so a second
	// Ctrl-C kills rbee at once instead of waiting out a cancel.
	go func() {
		<-ctx.Done()
		stop()
	}()
	os.Exit(cli.Run(ctx, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr))
}
