package models_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"rbee.dev/hive/internal/models"
)

// openLimited opens a catalog like openCatalog, then lets edit set the
// limits.
func openLimited(tb testing.TB, h *hub, edit func(*models.Options)) *models.Catalog {
	tb.Helper()
	o := models.Options{HFEndpoint: h.srv.URL, Client: h.srv.Client(), Retries: 2, RetryDelay: 10 * time.Millisecond}
	edit(&o)
	c, err := models.Open(tb.TempDir(), o)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// A model over MaxModelBytes is refused however its size shows: stated by
// the hub's listing (nothing fetched), stated by Content-Length (the body
// is not read), or only found out while reading a chunked body (cut off at
// the cap). A refusal is not retried and leaves no partial file.
func TestDownloadSizeCap(t *testing.T) {
	const limit = 64 << 10
	h := newHub(t)
	big := bytes.Repeat([]byte("m"), 4*limit)
	h.file("/honest.gguf", big)
	h.file("/chunked.gguf", big)
	h.noRange["/chunked.gguf"] = true // written without a length: chunked
	h.file("/small.gguf", big[:limit])
	h.repo("org/big", map[string]int64{"big.Q4_K_M.gguf": 4 * limit})
	h.lfsFile("/org/big/resolve/main/big.Q4_K_M.gguf", big, sum(big))
	c := openLimited(t, h, func(o *models.Options) { o.MaxModelBytes = limit })

	tests := []struct {
		name, source, fetched string
		requests              int
	}{
		{"listed size", "hf:org/big", "/org/big/resolve/main/big.Q4_K_M.gguf", 0},
		{"content length", h.srv.URL + "/honest.gguf", "/honest.gguf", 1},
		{"chunked", h.srv.URL + "/chunked.gguf", "/chunked.gguf", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec, err := download(t, c, models.DownloadRequest{Source: tt.source, ModelID: "m"})
			if !errors.Is(err, models.ErrTooLarge) || !strings.Contains(err.Error(), "--max-model-bytes") {
				t.Fatalf("%v\n%s", err, rec.text())
			}
			if n := len(h.seen(tt.fetched)); n != tt.requests {
				t.Fatalf("%d requests for %s, want %d", n, tt.fetched, tt.requests)
			}
			if left := partials(t, c); len(left) != 0 {
				t.Fatalf("partial files left: %v", left)
			}
			if _, err := c.Get("m"); !errors.Is(err, models.ErrNotFound) {
				t.Fatalf("model kept: %v", err)
			}
		})
	}
	if rec, err := download(t, c, models.DownloadRequest{Source: h.srv.URL + "/small.gguf"}); err != nil {
		t.Fatalf("a model of exactly the cap: %v\n%s", err, rec.text())
	}
}

// A download leaves MinFreeDisk free: it does not start on a disk already
// that full, and it stops, removing its partial file, when the disk fills
// up under it.
func TestDownloadMinFreeDisk(t *testing.T) {
	h := newHub(t)
	body := bytes.Repeat([]byte("m"), 16<<20)
	h.file("/chunked.gguf", body)
	h.noRange["/chunked.gguf"] = true

	t.Run("before", func(t *testing.T) {
		c := openLimited(t, h, func(o *models.Options) {
			o.MinFreeDisk = 5 << 30
			o.FreeSpace = func(string) int64 { return 1 << 30 }
		})
		_, err := download(t, c, models.DownloadRequest{Source: h.srv.URL + "/chunked.gguf"})
		if !errors.Is(err, models.ErrNoSpace) || !strings.Contains(err.Error(), "--min-free-disk") {
			t.Fatal(err)
		}
		if n := len(h.seen("/chunked.gguf")); n != 0 {
			t.Fatalf("fetched %d times", n)
		}
	})
	t.Run("while", func(t *testing.T) {
		// A 12 MiB disk of which the download's partial file is the only
		// user; 4 MiB must stay free.
		var calls atomic.Int64
		c := openLimited(t, h, func(o *models.Options) {
			o.MinFreeDisk = 4 << 20
			o.FreeSpace = func(dir string) int64 {
				calls.Add(1)
				used := int64(0)
				if st, err := os.Stat(filepath.Join(dir, ".partial", "chunked.part")); err == nil {
					used = st.Size()
				}
				return 12<<20 - used
			}
		})
		_, err := download(t, c, models.DownloadRequest{Source: h.srv.URL + "/chunked.gguf"})
		if !errors.Is(err, models.ErrNoSpace) || !strings.Contains(err.Error(), "--min-free-disk") {
			t.Fatal(err)
		}
		if calls.Load() < 2 {
			t.Fatalf("free space measured %d times", calls.Load())
		}
		if left := partials(t, c); len(left) != 0 {
			t.Fatalf("partial files left: %v", left)
		}
		if n := len(h.seen("/chunked.gguf")); n != 1 {
			t.Fatalf("%d requests: a full disk is not worth a retry", n)
		}
	})
}
