package api_test

import (
	"testing"

	"rbee.dev/shared/api"
)

func TestParseBytes(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"1048576", 1 << 20, true},
		{"256GiB", 256 << 30, true},
		{"5 GiB", 5 << 30, true},
		{"1.5G", 3 << 29, true},
		{"500MB", 500_000_000, true},
		{"64k", 64 << 10, true},
		{"0", 0, true},
		{"", 0, false},
		{"lots", 0, false},
		{"12XB", 0, false},
		{"GiB", 0, false},
		{"-1", 0, false},
		{"9999999PiB", 0, false},
		{"99999999999999999999", 0, false},
	}
	for _, tt := range tests {
		got, err := api.ParseBytes(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d (ok %v)", tt.in, got, err, tt.want, tt.ok)
		}
	}
}
