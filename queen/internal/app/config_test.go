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
