// Package models is a hive's model catalog: the model files under
// <data dir>/models, one JSON sidecar per model holding its api.Model
// record, and the downloads that fill it.
//
// Layout:
//
//	models/<model_id>.<ext>             the model file (ext from the source, e.g. gguf)
//	models/<model_id>.json              its record, written atomically
//	models/.partial/<model_id>.part     a download in progress or interrupted
//	models/.partial/<model_id>.part.json what a resume must match (URL, ETag, size)
//
// Model ids are checked with api.ValidModelID before any path is built, and
// names from URLs or Hugging Face repos are only ever used to derive an id or
// an extension, never as a path, so no request can reach outside the
// directory.
package models

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"rbee.dev/shared/api"
)

// DefaultHFEndpoint is the Hugging Face hub used when HF_ENDPOINT is unset.
const DefaultHFEndpoint = "https://huggingface.co"

const (
	// DefaultMaxModelBytes is the largest model file a hive accepts unless
	// told otherwise (--max-model-bytes): above the biggest single-file
	// GGUFs in use, far below what a hostile source could send.
	DefaultMaxModelBytes int64 = 256 << 30
	// DefaultMinFreeDisk is the space a hive's downloads leave free unless
	// told otherwise (--min-free-disk), for logs, work files and workers.
	DefaultMinFreeDisk int64 = 5 << 30
)

// Options configure a catalog. The zero value works: the public hub, no
// token, a default HTTP client.
type Options struct {
	// HFEndpoint is the Hugging Face hub (or a mirror) hf: sources use.
	HFEndpoint string
	// HFToken is sent as a bearer token to HFEndpoint only; it is never
	// narrated, logged or put in an error.
	HFToken string
	// Client makes every request; nil is a client without an overall
	// timeout (a download may take hours) that gives up on a silent server.
	Client *http.Client
	// Retries is how many times a download resumes by itself after the
	// connection breaks mid-transfer before it gives up and returns the
	// error (the partial file stays for a later resume). Zero: none.
	Retries int
	// RetryDelay is the pause before the first of those resumes; it doubles
	// each time. Zero: one second.
	RetryDelay time.Duration
	// StallTimeout ends a transfer that received nothing for this long (and
	// counts it as a broken connection). Zero: two minutes.
	StallTimeout time.Duration
	// MaxModelBytes caps one model file. A source that states a larger size
	// is refused before its body is read; a body that grows past the cap,
	// whatever its headers said, is cut off and its partial file removed.
	// Zero or less: DefaultMaxModelBytes.
	MaxModelBytes int64
	// MinFreeDisk is the space downloads leave free on the models
	// directory's file system, checked before a download starts and while
	// it runs. Zero: none beyond the file itself.
	MinFreeDisk int64
	// FreeSpace measures the space left on the file system holding dir, or
	// -1 when it cannot; nil asks the operating system (statfs).
	FreeSpace func(dir string) int64
}

// EnvOptions reads HF_ENDPOINT and HF_TOKEN through getenv (os.Getenv in
// the hive; a map in tests).
func EnvOptions(getenv func(string) string) Options {
	return Options{HFEndpoint: getenv("HF_ENDPOINT"), HFToken: getenv("HF_TOKEN"), Retries: 3}
}

// Catalog is the set of models on one hive. It is safe for concurrent use.
type Catalog struct {
	dir  string
	opts Options

	mu      sync.Mutex
	flights map[string]*flight
}

// Open makes the catalog under <dataDir>/models, creating the directories
// it needs.
func Open(dataDir string, o Options) (*Catalog, error) {
	abs, err := filepath.Abs(filepath.Join(dataDir, "models"))
	if err != nil {
		return nil, fmt.Errorf("models dir: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(abs, partialDir), 0o755); err != nil {
		return nil, fmt.Errorf("models dir: %w", err)
	}
	// Temporary files of record writes a crash interrupted are no use to
	// anyone; partial downloads stay, to be resumed.
	for _, d := range []string{abs, filepath.Join(abs, partialDir)} {
		if tmps, err := filepath.Glob(filepath.Join(d, ".tmp-*")); err == nil {
			for _, t := range tmps {
				_ = os.Remove(t)
			}
		}
	}
	if o.HFEndpoint == "" {
		o.HFEndpoint = DefaultHFEndpoint
	}
	o.HFEndpoint = strings.TrimRight(o.HFEndpoint, "/")
	if o.Client == nil {
		o.Client = defaultClient()
	}
	if o.RetryDelay <= 0 {
		o.RetryDelay = time.Second
	}
	if o.StallTimeout <= 0 {
		o.StallTimeout = 2 * time.Minute
	}
	if o.MaxModelBytes <= 0 {
		o.MaxModelBytes = DefaultMaxModelBytes
	}
	if o.MinFreeDisk < 0 {
		o.MinFreeDisk = 0
	}
	if o.FreeSpace == nil {
		o.FreeSpace = freeSpace
	}
	return &Catalog{dir: abs, opts: o, flights: map[string]*flight{}}, nil
}

// Dir is the absolute path of the models directory.
func (c *Catalog) Dir() string { return c.dir }

const (
	partialDir = ".partial"
	recordExt  = ".json"
)

func (c *Catalog) recordPath(id string) string { return filepath.Join(c.dir, id+recordExt) }

func (c *Catalog) partPath(id string) string {
	return filepath.Join(c.dir, partialDir, id+".part")
}

func checkID(id string) error {
	if !api.ValidModelID(id) {
		return fmt.Errorf("%w %q: 1-%d letters, digits, '.', '_' or '-', not starting with '.'", ErrInvalidID, clip(id), api.MaxModelID)
	}
	return nil
}

// List returns every model in the catalog, sorted by id. Records that cannot
// be read, or whose file has gone, are left out rather than failing the
// whole list.
func (c *Catalog) List() ([]api.Model, error) {
	entries, err := os.ReadDir(c.dir)
	if err != nil {
		return nil, fmt.Errorf("read models dir: %w", err)
	}
	out := []api.Model{}
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, recordExt) || strings.HasPrefix(name, ".") {
			continue
		}
		id := strings.TrimSuffix(name, recordExt)
		if !api.ValidModelID(id) {
			continue
		}
		if m, err := c.read(id); err == nil {
			out = append(out, m)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ModelID < out[j].ModelID })
	return out, nil
}

// Get returns one model's record, or an error wrapping ErrNotFound.
func (c *Catalog) Get(id string) (api.Model, error) {
	if err := checkID(id); err != nil {
		return api.Model{}, err
	}
	return c.read(id)
}

// Path is the absolute path of a model's file, for workers to load.
func (c *Catalog) Path(id string) (string, error) {
	m, err := c.Get(id)
	if err != nil {
		return "", err
	}
	return filepath.Join(c.dir, m.File), nil
}

// Delete removes a model's file and record, and any partial download of it.
// It refuses while the model is being downloaded.
func (c *Catalog) Delete(id string) error {
	if err := checkID(id); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, busy := c.flights[id]; busy {
		return fmt.Errorf("%w: model %s is being downloaded right now; cancel that download job first", ErrDownloading, id)
	}
	partial := removePartial(c.partPath(id))
	m, err := c.read(id)
	if err != nil {
		if errors.Is(err, ErrNotFound) && partial {
			return nil
		}
		return err
	}
	// The record goes first: a crash between the two removals leaves an
	// orphan file that List ignores, never a record without its file.
	if err := os.Remove(c.recordPath(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete model %s: %w", id, err)
	}
	if err := os.Remove(filepath.Join(c.dir, m.File)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete model %s: %w", id, err)
	}
	return nil
}

// read loads a record whose id has been checked.
func (c *Catalog) read(id string) (api.Model, error) {
	data, err := os.ReadFile(c.recordPath(id))
	if errors.Is(err, fs.ErrNotExist) {
		return api.Model{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return api.Model{}, fmt.Errorf("read model %s: %w", id, err)
	}
	var m api.Model
	if err := json.Unmarshal(data, &m); err != nil {
		return api.Model{}, fmt.Errorf("read model %s: corrupt record: %w", id, err)
	}
	// The record names its file; accept only <id>.<ext>, so an edited
	// record cannot point a worker at another file.
	ext, ok := strings.CutPrefix(m.File, id+".")
	if m.ModelID != id || !ok || !validExt(ext) {
		return api.Model{}, fmt.Errorf("read model %s: record does not match its file name", id)
	}
	if _, err := os.Stat(filepath.Join(c.dir, m.File)); err != nil {
		return api.Model{}, fmt.Errorf("%w: %s (its file %s is missing)", ErrNotFound, id, m.File)
	}
	return m, nil
}

// writeJSON writes v to path atomically: a temporary file in the same
// directory, synced, then renamed over path.
func writeJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(append(data, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
	}
	return err
}

// removePartial removes a partial file and its sidecar, reporting whether
// there was anything to remove.
func removePartial(part string) bool {
	a := os.Remove(part)
	b := os.Remove(part + recordExt)
	return a == nil || b == nil
}

// clip shortens hostile input before it goes into an error message.
func clip(s string) string {
	if len(s) > 80 {
		s = s[:80] + "…"
	}
	return strings.ToValidUTF8(s, "?")
}
