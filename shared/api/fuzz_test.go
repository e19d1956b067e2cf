package api_test

import (
	"bytes"
	"encoding/json"
	"math/big"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"rbee.dev/shared/api"
)

// maxErrorLen bounds every error a hostile request can provoke: messages
// name the problem and quote a clipped piece of the input, never all of it.
const maxErrorLen = 4 << 10

func checkMessage(t *testing.T, what string, err error) {
	t.Helper()
	msg := err.Error()
	if !utf8.ValidString(msg) {
		t.Fatalf("%s: error is not valid UTF-8: %q", what, msg)
	}
	if len(msg) >= maxErrorLen {
		t.Fatalf("%s: error is %d bytes, want under %d: %.200q…", what, len(msg), maxErrorLen, msg)
	}
}

// A request body, whatever its bytes, decodes or fails with a short, valid
// error; one that validates survives a marshal and decode round trip.
func FuzzDecodeJobRequest(f *testing.F) {
	for _, s := range []string{
		`{"operation":"hive_check","hive":"h1","events":5,"payload_bytes":16}`,
		`{"operation":"run","hive":"h1","command":["sh","-c","echo hi"],"env":{"A":"b"},"dir":"/tmp","timeout_s":1.5}`,
		`{"operation":"model_download","source":"hf:org/repo:file.gguf","model_id":"m-1","sha256":"` + strings.Repeat("ab", 32) + `"}`,
		`{"operation":"worker_spawn","model_id":"m","backend":"reference","gpus":[0,1],"ctx_size":4096}`,
		`{"operation":"status","labels":{"zone":"a"}}`,
		`{"operation":"worker_stop","worker_id":"w-1"}`,
		`{"operation":"launch\u0000missiles","hive":"../etc"}`,
		`{"operation":"hive_check","events":1e309}`,
		`{"` + strings.Repeat("x", 5000) + `":1}`,
		`{"labels":{"a":{"b":{"c":1}}}}`,
		strings.Repeat("[", 20000),
		"\xef\xbb\xbf{}",
		"{\"operation\":\"status\"} trailing",
		`null`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := api.DecodeJobRequest(bytes.NewReader(body))
		if err != nil {
			checkMessage(t, "decode", err)
			return
		}
		if err := req.Validate(); err != nil {
			checkMessage(t, "validate", err)
			return
		}
		data, err := json.Marshal(req)
		if err != nil {
			t.Fatalf("marshal a valid request: %v", err)
		}
		again, err := api.DecodeJobRequest(bytes.NewReader(data))
		if err != nil {
			t.Fatalf("decode %s again: %v", data, err)
		}
		if err := again.Validate(); err != nil {
			t.Fatalf("valid request %s fails validation after a round trip: %v", data, err)
		}
	})
}

// A model id that validates is one plain file name: joined to a directory
// it stays a direct child of that directory.
func FuzzValidModelID(f *testing.F) {
	for _, s := range []string{
		"llama-3.1-8b", "Q4_K_M", "a", ".hidden", "..", "a..b", "a/b", `a\b`, "/etc/passwd",
		"a\x00b", strings.Repeat("m", 128), strings.Repeat("m", 129), "café", "-x", "x.",
	} {
		f.Add(s)
	}
	const dir = "/var/lib/rbee/models"
	f.Fuzz(func(t *testing.T, s string) {
		if !api.ValidModelID(s) {
			return
		}
		switch {
		case s == "", len(s) > api.MaxModelID:
			t.Fatalf("%q accepted with length %d", s, len(s))
		case strings.ContainsAny(s, "/\\\x00"), strings.Contains(s, ".."), s[0] == '.':
			t.Fatalf("%q accepted but could act as a path", s)
		}
		for _, name := range []string{s, s + ".json", s + ".gguf"} {
			p := filepath.Join(dir, name)
			rel, err := filepath.Rel(dir, p)
			if err != nil || strings.HasPrefix(rel, "..") || rel != name || filepath.Dir(p) != dir {
				t.Fatalf("%q leaves %s: %s (rel %q, %v)", name, dir, p, rel, err)
			}
		}
	})
}

// ParseLastEventID accepts exactly the decimal spellings of a uint64, at
// most 20 digits, and nothing else.
func FuzzLastEventID(f *testing.F) {
	for _, s := range []string{
		"0", "1", "42", "007", "18446744073709551615", "18446744073709551616", "00000000000000000001",
		"000000000000000000001", "-1", "+1", " 1", "1 ", "0x10", "1e3", "1_000", "abc", "１２", "",
	} {
		f.Add(s)
	}
	maxU64 := new(big.Int).SetUint64(^uint64(0))
	f.Fuzz(func(t *testing.T, s string) {
		n, err := api.ParseLastEventID(s)
		digits := s != "" && strings.Trim(s, "0123456789") == ""
		var want *big.Int
		if digits && len(s) <= api.MaxLastEventIDLen {
			want, _ = new(big.Int).SetString(s, 10)
			if want.Cmp(maxU64) > 0 {
				want = nil
			}
		}
		if err != nil {
			checkMessage(t, "parse", err)
			if want != nil {
				t.Fatalf("%q refused, want %s: %v", s, want, err)
			}
			return
		}
		if want == nil {
			t.Fatalf("%q accepted as %d", s, n)
		}
		trimmed := strings.TrimLeft(s, "0")
		if trimmed == "" {
			trimmed = "0"
		}
		if got := strconv.FormatUint(n, 10); got != trimmed || want.Uint64() != n {
			t.Fatalf("%q parsed as %d", s, n)
		}
	})
}
