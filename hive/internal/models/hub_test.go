package models_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"rbee.dev/hive/internal/models"
)

// hub stands in for the Hugging Face hub and for plain web servers: it
// serves repo listings and files the way the hub does (LFS files redirect to
// storage with X-Linked-Etag = sha256), and can break, stall or ignore
// ranges on demand.
type hub struct {
	srv *httptest.Server

	mu       sync.Mutex
	files    map[string][]byte // URL path -> content
	repos    map[string][]map[string]any
	lfs      map[string]string // URL path -> sha256 the hub claims (X-Linked-Etag)
	breaks   map[string]int    // URL path -> how many more GETs to cut off
	noRange  map[string]bool   // URL path -> answer every GET with 200
	stall    map[string]chan struct{}
	huge     map[string]bool // URL path -> claim a body of 2^60 bytes
	requests []hubRequest
}

// hubRequest is what the hub saw of one request.
type hubRequest struct {
	Path, Range, IfRange, Auth string
}

func newHub(tb testing.TB) *hub {
	tb.Helper()
	h := &hub{
		files: map[string][]byte{}, repos: map[string][]map[string]any{}, lfs: map[string]string{},
		breaks: map[string]int{}, noRange: map[string]bool{}, stall: map[string]chan struct{}{}, huge: map[string]bool{},
	}
	h.srv = httptest.NewServer(http.HandlerFunc(h.serve))
	tb.Cleanup(h.srv.Close)
	return h
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// file serves content at path (e.g. /org/repo/resolve/main/x.gguf).
func (h *hub) file(path string, content []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.files[path] = content
}

// lfsFile serves content like an LFS file on the hub: the resolve URL
// redirects to storage and names the sha256 (which a test may make wrong).
func (h *hub) lfsFile(path string, content []byte, claimed string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.files["/storage/"+sum(content)] = content
	h.lfs[path] = claimed
	h.files[path] = content
}

func (h *hub) repo(orgRepo string, files map[string]int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var sib []map[string]any
	for name, size := range files {
		sib = append(sib, map[string]any{"rfilename": name, "size": size})
	}
	h.repos["/api/models/"+orgRepo] = sib
}

func (h *hub) seen(path string) []hubRequest {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []hubRequest
	for _, r := range h.requests {
		if r.Path == path {
			out = append(out, r)
		}
	}
	return out
}

func (h *hub) serve(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	h.requests = append(h.requests, hubRequest{Path: r.URL.Path, Range: r.Header.Get("Range"), IfRange: r.Header.Get("If-Range"), Auth: r.Header.Get("Authorization")})
	sib, isRepo := h.repos[r.URL.Path]
	content, isFile := h.files[r.URL.Path]
	claimed, isLFS := h.lfs[r.URL.Path]
	cut := h.breaks[r.URL.Path] > 0
	if cut {
		h.breaks[r.URL.Path]--
	}
	noRange, stall, huge := h.noRange[r.URL.Path], h.stall[r.URL.Path], h.huge[r.URL.Path]
	h.mu.Unlock()

	switch {
	case huge:
		w.Header().Set("Content-Length", strconv.FormatInt(1<<60, 10))
		w.WriteHeader(http.StatusOK)
		return
	case isRepo:
		_ = json.NewEncoder(w).Encode(map[string]any{"siblings": sib})
		return
	case !isFile:
		http.Error(w, "Entry not found", http.StatusNotFound)
		return
	case isLFS:
		w.Header().Set("X-Linked-Etag", `"`+claimed+`"`)
		w.Header().Set("X-Linked-Size", strconv.Itoa(len(content)))
		http.Redirect(w, r, "/storage/"+sum(content), http.StatusFound)
		return
	}
	w.Header().Set("ETag", `"v1-`+sum(content)[:16]+`"`)
	switch {
	case cut || stall != nil:
		// Half the body, then the connection breaks (or waits for the
		// test to let it go, or for the client to hang up).
		w.Header().Set("Content-Length", strconv.Itoa(len(content)))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(content[:len(content)/2])
		w.(http.Flusher).Flush()
		if cut {
			panic(http.ErrAbortHandler)
		}
		select {
		case <-stall:
			_, _ = w.Write(content[len(content)/2:])
		case <-r.Context().Done():
		}
	case noRange:
		_, _ = w.Write(content)
	default:
		http.ServeContent(w, r, "", time.Unix(1700000000, 0), bytes.NewReader(content))
	}
}

// openCatalog opens a catalog in a fresh directory that talks to h.
func openCatalog(tb testing.TB, h *hub, retries int) *models.Catalog {
	tb.Helper()
	c, err := models.Open(tb.TempDir(), models.Options{
		HFEndpoint: h.srv.URL, HFToken: "hf_secret_token", Client: h.srv.Client(),
		Retries: retries, RetryDelay: 10 * time.Millisecond,
	})
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// recorder collects what a download narrates.
type recorder struct {
	mu       sync.Mutex
	says     []string
	progress [][2]int64
	onSay    func(string)
	onProg   func(done, total int64)
}

func (r *recorder) say(level, msg string) {
	r.mu.Lock()
	r.says = append(r.says, level+": "+msg)
	f := r.onSay
	r.mu.Unlock()
	if f != nil {
		f(msg)
	}
}

func (r *recorder) prog(done, total int64) {
	r.mu.Lock()
	r.progress = append(r.progress, [2]int64{done, total})
	f := r.onProg
	r.mu.Unlock()
	if f != nil {
		f(done, total)
	}
}

func (r *recorder) text() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.says, "\n")
}

func download(tb testing.TB, c *models.Catalog, req models.DownloadRequest) (*recorder, error) {
	tb.Helper()
	rec := &recorder{}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := c.Download(ctx, req, rec.prog, rec.say)
	return rec, err
}
