// Package auth holds the queen's API keys: stored only as hashes in a NATS
// bucket that every queen watches, checked in memory and in constant time
// on each request.
package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"rbee.dev/queen/internal/store"
	"rbee.dev/shared/api"
)

// ErrNotFound means no key has that id.
var ErrNotFound = errors.New("key not found")

// Principal is who a request acts as.
type Principal struct {
	KeyID  string
	Name   string
	Scopes []string
	// Limits are the key's rate limits, none for the configured admin key
	// and an open queen.
	Limits api.KeyLimits
}

// Has reports whether p may act with scope: admin may do everything, and
// operate everything read may (SECURITY.md).
func (p Principal) Has(scope string) bool {
	for _, s := range p.Scopes {
		if s == scope || s == api.ScopeAdmin || (s == api.ScopeOperate && scope == api.ScopeRead) {
			return true
		}
	}
	return false
}

// principalKey is the context key of the request's principal.
type principalKey struct{}

// NewContext returns ctx carrying p, for handlers outside the HTTP layer
// that decide by scope within a request (the OpenAI API's download field).
func NewContext(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// FromContext returns the principal ctx carries; without one it is the
// zero Principal, which has no scope at all.
func FromContext(ctx context.Context) Principal {
	p, _ := ctx.Value(principalKey{}).(Principal)
	return p
}

// record is what the bucket stores: never the secret itself.
type record struct {
	api.Key
	Hash string `json:"hash"`
}

// Keys checks and manages API keys.
type Keys struct {
	kv        *store.Bucket
	log       *slog.Logger
	adminHash []byte
	required  bool

	mu     sync.RWMutex
	keys   map[string]record
	synced chan struct{}
}

// New makes the key store. adminKey, if set, is a bootstrap key with the
// admin scope that lives only in the queen's configuration. required says
// whether every request must carry a key; it is fixed for the queen's life.
func New(kv *store.Bucket, adminKey string, required bool, log *slog.Logger) *Keys {
	k := &Keys{kv: kv, log: log.With("component", "auth"), keys: map[string]record{}, synced: make(chan struct{}), required: required}
	if adminKey != "" {
		sum := sha256.Sum256([]byte(adminKey))
		k.adminHash = sum[:]
	}
	return k
}

// Run keeps the in-memory copy of the bucket current until ctx ends.
func (k *Keys) Run(ctx context.Context) error {
	var once sync.Once
	k.kv.Watch(ctx, k.apply, func() { once.Do(func() { close(k.synced) }) })
	return nil
}

// Synced is closed once the bucket's keys are loaded.
func (k *Keys) Synced() <-chan struct{} { return k.synced }

func (k *Keys) apply(e store.Entry) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if e.Deleted {
		delete(k.keys, e.Key)
		return
	}
	var r record
	if err := json.Unmarshal(e.Value, &r); err != nil {
		k.log.Warn("bad key record", "key_id", e.Key, "err", err)
		return
	}
	k.keys[e.Key] = r
}

// Enabled reports whether requests must carry a key. It was decided from
// configuration when the queen started and never changes: revoking the last
// key or purging the bucket leaves every request refused, not open.
func (k *Keys) Enabled() bool { return k.required }

// Count is how many stored keys there are.
func (k *Keys) Count() int {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return len(k.keys)
}

// Authenticate finds the principal of a bearer token.
func (k *Keys) Authenticate(token string) (Principal, bool) {
	sum := sha256.Sum256([]byte(token))
	if k.adminHash != nil && subtle.ConstantTimeCompare(sum[:], k.adminHash) == 1 {
		return Principal{KeyID: "admin", Name: "admin key from configuration", Scopes: []string{api.ScopeAdmin}}, true
	}
	id, ok := keyID(token)
	if !ok {
		return Principal{}, false
	}
	k.mu.RLock()
	r, found := k.keys[id]
	k.mu.RUnlock()
	want, err := hex.DecodeString(r.Hash)
	if !found || err != nil || subtle.ConstantTimeCompare(sum[:], want) != 1 {
		return Principal{}, false
	}
	return Principal{KeyID: r.ID, Name: r.Name, Scopes: r.Scopes, Limits: r.KeyLimits}, true
}

// keyID reads the id out of a key of the form rbee_<id>_<secret>.
func keyID(token string) (string, bool) {
	rest, ok := strings.CutPrefix(token, "rbee_")
	if !ok {
		return "", false
	}
	id, secret, ok := strings.Cut(rest, "_")
	return id, ok && len(id) == 12 && len(secret) >= 32
}

// Create makes a key and returns it with its secret, the only time the
// secret is seen.
func (k *Keys) Create(ctx context.Context, req api.KeyRequest) (api.Key, error) {
	var idb [6]byte
	var secret [32]byte
	_, _ = rand.Read(idb[:])
	_, _ = rand.Read(secret[:])
	id := hex.EncodeToString(idb[:])
	token := "rbee_" + id + "_" + base64.RawURLEncoding.EncodeToString(secret[:])
	sum := sha256.Sum256([]byte(token))
	scopes := append([]string(nil), req.Scopes...)
	sort.Strings(scopes)
	r := record{Key: api.Key{ID: id, Name: req.Name, Scopes: scopes, KeyLimits: req.KeyLimits, CreatedAt: time.Now().UTC()}, Hash: hex.EncodeToString(sum[:])}
	data, err := json.Marshal(r)
	if err != nil {
		return api.Key{}, err
	}
	if _, err := k.kv.Create(ctx, id, data); err != nil {
		return api.Key{}, fmt.Errorf("store key: %w", err)
	}
	// Usable on this queen at once, before the watch brings it back.
	k.mu.Lock()
	k.keys[id] = r
	k.mu.Unlock()
	out := r.Key
	out.Key = token
	return out, nil
}

// List returns every key without secrets or hashes.
func (k *Keys) List() []api.Key {
	k.mu.RLock()
	out := make([]api.Key, 0, len(k.keys))
	for _, r := range k.keys {
		out = append(out, r.Key)
	}
	k.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out
}

// Revoke deletes a key; every queen stops accepting it as its watch sees
// the delete.
func (k *Keys) Revoke(ctx context.Context, id string) error {
	k.mu.RLock()
	_, ok := k.keys[id]
	k.mu.RUnlock()
	if !ok {
		return ErrNotFound
	}
	if err := k.kv.Purge(ctx, id); err != nil {
		return fmt.Errorf("revoke key %s: %w", id, err)
	}
	k.mu.Lock()
	delete(k.keys, id)
	k.mu.Unlock()
	return nil
}
