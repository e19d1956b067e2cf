package secret_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"rbee.dev/shared/secret"
)

func TestReadFile(t *testing.T) {
	dir := t.TempDir()
	for name, tc := range map[string]struct {
		content, want string
		ok            bool
	}{
		"trailing newline": {"s3cret\n", "s3cret", true},
		"spaces":           {"  s3cret \r\n", "s3cret", true},
		"empty":            {"\n", "", false},
	} {
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "_"))
		if err := os.WriteFile(p, []byte(tc.content), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := secret.ReadFile(p)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("%s: %q, %v", name, got, err)
		}
	}
	if _, err := secret.ReadFile(filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing file is not a secret")
	}
}

func TestRedactURLs(t *testing.T) {
	got := secret.RedactURLs("nats://hive1:pa55@n1:4222, nats://n2:4222,tls://u:p@n3:4222")
	if strings.Contains(got, "pa55") || strings.Contains(got, ":p@") {
		t.Fatalf("password left in %q", got)
	}
	if !strings.Contains(got, "n2:4222") || !strings.Contains(got, "hive1") {
		t.Fatalf("too much hidden: %q", got)
	}
}
