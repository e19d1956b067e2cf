// Package secret handles what holds secrets on their way into a process
// (files) and out of it (logs and errors), the same way on queen and hive.
package secret

import (
	"fmt"
	"net/url"
	"os"
	"strings"
)

// ReadFile reads a secret from a file, without the newline an editor or
// echo leaves at its end. An empty file is an error: an empty secret would
// silently turn a check off.
func ReadFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return s, nil
}

// RedactURLs hides the passwords in a comma-separated list of URLs (NATS
// server lists), for logs and errors.
func RedactURLs(list string) string {
	parts := strings.Split(list, ",")
	for i, p := range parts {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil {
			parts[i] = u.Redacted()
		} else {
			parts[i] = "(unparsable url)"
		}
	}
	return strings.Join(parts, ",")
}
