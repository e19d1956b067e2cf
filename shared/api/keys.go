package api

import (
	"fmt"
	"strings"
	"time"
)

// API key scopes. admin holds every other scope.
const (
	ScopeInfer   = "infer"
	ScopeRead    = "read"
	ScopeOperate = "operate"
	ScopeAdmin   = "admin"
)

// Scopes lists every scope.
var Scopes = []string{ScopeInfer, ScopeRead, ScopeOperate, ScopeAdmin}

// ScopeForOperation is the scope a key needs to submit a job, from the
// operation table (OpSpec.Scope); an operation it does not list needs
// operate, and is then refused as unknown.
func ScopeForOperation(op string) string {
	if s := Operations[op].Scope; s != "" {
		return s
	}
	return ScopeOperate
}

// KeyRequest is the body of POST /v1/keys.
type KeyRequest struct {
	Name   string   `json:"name"`
	Scopes []string `json:"scopes"`
	KeyLimits
}

// KeyLimits bound what one key may ask of the OpenAI API, counted across
// every queen of a cluster; 0 is no limit. Past one the answer is 429 with
// Retry-After.
type KeyLimits struct {
	// RPM is requests per minute.
	RPM int `json:"rpm,omitempty"`
	// TPM is tokens (prompt and completion) per minute: a request is
	// refused while the minute's tokens have reached it.
	TPM int `json:"tpm,omitempty"`
	// MaxConcurrent is requests running at once.
	MaxConcurrent int `json:"max_concurrent,omitempty"`
	// Priority orders the key's waiting inference requests in the
	// cluster's queue: higher goes first, equal priorities first come,
	// first served. 0 is the default.
	Priority int `json:"priority,omitempty"`
}

// Any reports whether l sets any limit.
func (l KeyLimits) Any() bool { return l.RPM > 0 || l.TPM > 0 || l.MaxConcurrent > 0 }

// MaxPriority is the highest key priority.
const MaxPriority = 100

// Key is an API key as listed. Secret is set only in the answer that
// creates it, the one time it is shown.
type Key struct {
	ID     string   `json:"id"`
	Key    string   `json:"key,omitempty"`
	Name   string   `json:"name"`
	Scopes []string `json:"scopes"`
	KeyLimits
	CreatedAt time.Time `json:"created_at"`
}

// KeyList is the answer to GET /v1/keys.
type KeyList struct {
	Keys []Key `json:"keys"`
}

// Validate checks a key request.
func (r *KeyRequest) Validate() error {
	var p []string
	if r.Name == "" || len(r.Name) > 128 || hasControl(r.Name) {
		p = append(p, "name is required: 1-128 characters, no control characters")
	}
	if len(r.Scopes) == 0 {
		p = append(p, fmt.Sprintf("scopes is required: some of %s", strings.Join(Scopes, ", ")))
	}
	seen := map[string]bool{}
	for _, s := range r.Scopes {
		known := false
		for _, k := range Scopes {
			known = known || s == k
		}
		if !known {
			p = append(p, fmt.Sprintf("scope %q is not one of %s", clip(s), strings.Join(Scopes, ", ")))
		}
		if seen[s] {
			p = append(p, fmt.Sprintf("scope %q is listed twice", clip(s)))
		}
		seen[s] = true
	}
	for _, l := range []struct {
		name string
		n    int
	}{{"rpm", r.RPM}, {"tpm", r.TPM}, {"max_concurrent", r.MaxConcurrent}} {
		if l.n < 0 {
			p = append(p, fmt.Sprintf("%s must not be negative (0 is no limit), not %d", l.name, l.n))
		}
	}
	if r.Priority < 0 || r.Priority > MaxPriority {
		p = append(p, fmt.Sprintf("priority must be between 0 and %d, not %d", MaxPriority, r.Priority))
	}
	if len(p) > 0 {
		return &ValidationError{Problems: p}
	}
	return nil
}
