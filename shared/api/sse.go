package api

import (
	"fmt"
	"strconv"
)

// MaxLastEventIDLen is the longest Last-Event-ID accepted: the digits of
// the largest uint64.
const MaxLastEventIDLen = 20

// ParseLastEventID parses the resume point of an SSE stream (the
// Last-Event-ID header, or the last_event_id query parameter) strictly: 1
// to 20 ASCII decimal digits whose value fits a uint64. Signs, spaces, hex,
// exponents and underscores are refused, so that no two spellings a proxy
// might read differently mean the same event. An empty value is an error
// too; a caller treats a missing header as "from the start" before calling.
func ParseLastEventID(s string) (uint64, error) {
	if s == "" || len(s) > MaxLastEventIDLen {
		return 0, fmt.Errorf("last event id %q must be 1-%d decimal digits", clip(s), MaxLastEventIDLen)
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("last event id %q must be an event id (a decimal number)", clip(s))
		}
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("last event id %q is out of range", clip(s))
	}
	return n, nil
}
