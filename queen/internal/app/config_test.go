package app_test

import (
	"io"
	"testing"

	"rbee.dev/queen/internal/app"
)

// Byte limits take a number with an optional unit, from a flag or its
// environment twin, and nonsense is refused.
func TestNarrationLimitFlags(t *testing.T) {
	cases := []struct {
		name       string
		args       []string
		env        map[string]string
		store, job int64
		err        bool
	}{
		{"defaults", nil, nil, 0, 1 << 30, false},
		{"units", []string{"--narration-max-bytes", "20GiB", "--job-max-narration-bytes", "512MB"}, nil, 20 << 30, 512e6, false},
		{"plain bytes", []string{"--job-max-narration-bytes", "1048576"}, nil, 0, 1 << 20, false},
		{"environment", nil, map[string]string{"QUEEN_NARRATION_MAX_BYTES": "8MiB", "QUEEN_JOB_MAX_NARRATION_BYTES": "1MiB"}, 8 << 20, 1 << 20, false},
		{"no budget", []string{"--job-max-narration-bytes", "0"}, nil, 0, 0, false},
		{"budget too small", []string{"--job-max-narration-bytes", "1KiB"}, nil, 0, 0, true},
		{"not a size", []string{"--narration-max-bytes", "lots"}, nil, 0, 0, true},
		{"negative", []string{"--narration-max-bytes", "-1"}, nil, 0, 0, true},
		{"overflow", []string{"--narration-max-bytes", "9000000000TiB"}, nil, 0, 0, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := app.ParseConfig(c.args, func(k string) string { return c.env[k] }, io.Discard)
			if c.err {
				if err == nil {
					t.Fatalf("accepted: %+v", cfg)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.NarrationMaxBytes != c.store || cfg.JobMaxNarrationBytes != c.job {
				t.Fatalf("narration max %d, job max %d; want %d, %d", cfg.NarrationMaxBytes, cfg.JobMaxNarrationBytes, c.store, c.job)
			}
		})
	}
}

// Aliases come from repeated flags or one comma-separated environment
// value; malformed, self-naming, conflicting and chained ones are refused.
func TestAliasFlags(t *testing.T) {
	cases := []struct {
		name string
		args []string
		env  map[string]string
		want map[string]string
		err  bool
	}{
		{"none", nil, nil, nil, false},
		{"repeated", []string{"--alias", "gpt-4o-mini=qwen-0.5b", "--alias", "gpt-4o=llama-3.1-8b"}, nil,
			map[string]string{"gpt-4o-mini": "qwen-0.5b", "gpt-4o": "llama-3.1-8b"}, false},
		{"environment", nil, map[string]string{"QUEEN_ALIAS": "gpt-4o-mini=qwen-0.5b, text-embedding-3-small=bge"},
			map[string]string{"gpt-4o-mini": "qwen-0.5b", "text-embedding-3-small": "bge"}, false},
		{"no model", []string{"--alias", "gpt-4o-mini"}, nil, nil, true},
		{"bad name", []string{"--alias", "../x=qwen"}, nil, nil, true},
		{"itself", []string{"--alias", "qwen=qwen"}, nil, nil, true},
		{"twice", []string{"--alias", "a=b", "--alias", "a=c"}, nil, nil, true},
		{"chained", []string{"--alias", "a=b,b=c"}, nil, nil, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := app.ParseConfig(c.args, func(k string) string { return c.env[k] }, io.Discard)
			if c.err {
				if err == nil {
					t.Fatalf("accepted: %v", cfg.Infer.Aliases)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(cfg.Infer.Aliases) != len(c.want) {
				t.Fatalf("aliases %v, want %v", cfg.Infer.Aliases, c.want)
			}
			for k, v := range c.want {
				if cfg.Infer.Aliases[k] != v {
					t.Fatalf("aliases %v, want %v", cfg.Infer.Aliases, c.want)
				}
			}
		})
	}
}

// The embedded server's disk sync is a stated choice: a second by default,
// always, a duration or the server's own default, and never for an
// external server, whose own config decides.
func TestNATSSyncFlag(t *testing.T) {
	cases := []struct {
		name string
		args []string
		env  map[string]string
		want string
		err  bool
	}{
		{"default", nil, nil, "1s", false},
		{"always", []string{"--nats-sync", "always"}, nil, "always", false},
		{"interval", []string{"--nats-sync", "100ms"}, nil, "100ms", false},
		{"server default", []string{"--nats-sync", "default"}, nil, "default", false},
		{"environment", nil, map[string]string{"QUEEN_NATS_SYNC": "always"}, "always", false},
		{"zero", []string{"--nats-sync", "0s"}, nil, "", true},
		{"negative", []string{"--nats-sync", "-1s"}, nil, "", true},
		{"nonsense", []string{"--nats-sync", "sometimes"}, nil, "", true},
		{"external server", []string{"--nats-url", "nats://127.0.0.1:4222", "--nats-sync", "always"}, nil, "", true},
		{"external server, environment", []string{"--nats-url", "nats://127.0.0.1:4222"}, map[string]string{"QUEEN_NATS_SYNC": "1s"}, "", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := app.ParseConfig(c.args, func(k string) string { return c.env[k] }, io.Discard)
			if c.err {
				if err == nil {
					t.Fatalf("accepted: %v", cfg.NATSSync)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.NATSSync.String(); got != c.want {
				t.Fatalf("nats sync %s, want %s", got, c.want)
			}
		})
	}
}
