package app

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"rbee.dev/queen/internal/natsauth"
)

// natsConfig is `queen nats-config`: it makes NATS credentials for the
// queen and the named hives, writes them for --nats-auth, and prints the
// nats-server accounts block and each hive's connection flags.
func natsConfig(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("queen nats-config", flag.ContinueOnError)
	fs.SetOutput(stderr)
	hives := fs.String("hives", "", "comma-separated hive ids")
	out := fs.String("out", "nats-auth.json", "credentials file to write (mode 0600) for queen --nats-auth")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *hives == "" {
		return errors.New("nats-config: --hives is required, e.g. --hives gpu1,gpu2")
	}
	f, err := natsauth.Generate(strings.Split(*hives, ","))
	if err != nil {
		return fmt.Errorf("nats-config: %w", err)
	}
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(*out, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("nats-config: %w", err)
	}
	fmt.Fprintf(stdout, "# Credentials written to %s: start the queen with --nats-auth %s.\n", *out, *out)
	fmt.Fprintf(stdout, "# For an external nats-server, add this accounts block to its configuration, in place of any\n"+
		"# authorization block. The queens' streams then live in the %s account: what the global account\n"+
		"# stored before (jobs, API keys, usage) is not seen there.\n\n%s\n", natsauth.QueenAccount, natsauth.ServerConfig(f))
	fmt.Fprintln(stdout, "# Start each hive with its own identity:")
	for _, h := range strings.Split(*hives, ",") {
		fmt.Fprintf(stdout, "HIVE_NATS_PASSWORD=%s hive --id %s --nats-user %s --nats-ca CA.pem --nats-url tls://QUEEN:4222\n", f.Hives[h], h, h)
	}
	return nil
}
