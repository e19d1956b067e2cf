package models_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"rbee.dev/hive/internal/models"
	"rbee.dev/shared/api"
)

func tinyModel(tb testing.TB, rows uint64) []byte {
	tb.Helper()
	return makeGGUF(tb, ggufSpec{name: "tiny", fileType: 15, ctx: 4096, rows: rows})
}

// partials lists what is left in the catalog's partial-download folder.
func partials(tb testing.TB, c *models.Catalog) []string {
	tb.Helper()
	entries, err := os.ReadDir(filepath.Join(c.Dir(), ".partial"))
	if err != nil {
		tb.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestDownloadFromURL(t *testing.T) {
	h := newHub(t)
	content := tinyModel(t, 1024)
	h.file("/files/Tiny-Llama.Q4_K_M.gguf", content)
	c := openCatalog(t, h, 0)

	rec, err := download(t, c, models.DownloadRequest{Source: h.srv.URL + "/files/Tiny-Llama.Q4_K_M.gguf"})
	if err != nil {
		t.Fatal(err)
	}
	m, err := c.Get("Tiny-Llama.Q4_K_M")
	if err != nil {
		t.Fatalf("get after download: %v\n%s", err, rec.text())
	}
	want := api.Model{ModelID: "Tiny-Llama.Q4_K_M", File: "Tiny-Llama.Q4_K_M.gguf", SizeBytes: int64(len(content)), SHA256: sum(content),
		Architecture: "llama", Quantization: "Q4_K_M", ContextLength: 4096, Parameters: 64 * 1024}
	if m.ModelID != want.ModelID || m.File != want.File || m.SizeBytes != want.SizeBytes || m.SHA256 != want.SHA256 ||
		m.Architecture != want.Architecture || m.Quantization != want.Quantization || m.ContextLength != want.ContextLength ||
		m.Parameters != want.Parameters || m.Source != h.srv.URL+"/files/Tiny-Llama.Q4_K_M.gguf" || m.CreatedAt.IsZero() {
		t.Fatalf("record:\n got %+v\nwant %+v", m, want)
	}
	if m.VRAMEstimateBytes < uint64(len(content)) {
		t.Errorf("vram estimate %d is below the file size %d", m.VRAMEstimateBytes, len(content))
	}
	p, err := c.Path(m.ModelID)
	if err != nil || !filepath.IsAbs(p) {
		t.Fatalf("path %q, %v", p, err)
	}
	if got, _ := os.ReadFile(p); string(got) != string(content) {
		t.Fatal("catalog file differs from the source")
	}
	if list, _ := c.List(); len(list) != 1 || list[0].ModelID != m.ModelID {
		t.Fatalf("list: %+v", list)
	}
	if left := partials(t, c); len(left) != 0 {
		t.Fatalf("partial files left: %v", left)
	}

	// Progress: starts at 0, ends at the total, never goes back.
	last := rec.progress[len(rec.progress)-1]
	if rec.progress[0][0] != 0 || last != [2]int64{int64(len(content)), int64(len(content))} {
		t.Fatalf("progress %v", rec.progress)
	}
	for i := 1; i < len(rec.progress); i++ {
		if rec.progress[i][0] < rec.progress[i-1][0] {
			t.Fatalf("progress went back: %v", rec.progress)
		}
	}

	// The same download again is answered from the catalog.
	rec, err = download(t, c, models.DownloadRequest{Source: h.srv.URL + "/files/Tiny-Llama.Q4_K_M.gguf"})
	if err != nil || !strings.Contains(rec.text(), "already in the catalog") {
		t.Fatalf("second download: %v\n%s", err, rec.text())
	}
	if n := len(h.seen("/files/Tiny-Llama.Q4_K_M.gguf")); n != 1 {
		t.Fatalf("the source was fetched %d times, want once", n)
	}
	// Another file under the same id is refused.
	h.file("/files/other.gguf", []byte("other"))
	_, err = download(t, c, models.DownloadRequest{Source: h.srv.URL + "/files/other.gguf", ModelID: "Tiny-Llama.Q4_K_M"})
	if !errors.Is(err, models.ErrExists) {
		t.Fatalf("download over an existing id: %v", err)
	}
}

func TestDownloadFromHubChoosesQuantisation(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]int64
		want  string
		why   string
	}{
		{"prefers Q4_K_M", map[string]int64{"m.Q8_0.gguf": 9, "m.Q4_K_M.gguf": 5, "m.Q4_K_S.gguf": 4, "README.md": 1, "mmproj-m.Q4_K_M.gguf": 1}, "m.Q4_K_M.gguf", "preferred"},
		{"then Q5_K_M", map[string]int64{"m-q8_0.gguf": 9, "m-q5_k_m.gguf": 6, "m-IQ4_XS.gguf": 3}, "m-q5_k_m.gguf", "comes next"},
		{"Q4_0 is not Q4_0_4_4", map[string]int64{"m.Q4_0_4_4.gguf": 3, "m.Q8_0.gguf": 9}, "m.Q8_0.gguf", "comes next"},
		{"else the smallest", map[string]int64{"m.F16.gguf": 16, "m.IQ3_XS.gguf": 3, "m.Q6_K.gguf": 7}, "m.IQ3_XS.gguf", "smallest"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHub(t)
			content := tinyModel(t, 64)
			h.repo("org/repo", tt.files)
			h.lfsFile("/org/repo/resolve/main/"+tt.want, content, sum(content))
			c := openCatalog(t, h, 0)
			rec, err := download(t, c, models.DownloadRequest{Source: "hf:org/repo", ModelID: "m"})
			if err != nil {
				t.Fatalf("%v\n%s", err, rec.text())
			}
			if !strings.Contains(rec.text(), "chose "+tt.want) || !strings.Contains(rec.text(), tt.why) {
				t.Fatalf("narration does not say %q was chosen (%s):\n%s", tt.want, tt.why, rec.text())
			}
			m, err := c.Get("m")
			if err != nil || m.Source != "hf:org/repo:"+tt.want || m.SHA256 != sum(content) {
				t.Fatalf("record %+v, %v", m, err)
			}
			for _, r := range append(h.seen("/api/models/org/repo"), h.seen("/org/repo/resolve/main/"+tt.want)...) {
				if r.Auth != "Bearer hf_secret_token" {
					t.Fatalf("request to %s carried Authorization %q", r.Path, r.Auth)
				}
			}
			if strings.Contains(rec.text(), "hf_secret_token") {
				t.Fatal("the token was narrated")
			}
		})
	}
}

func TestDownloadHubRefusals(t *testing.T) {
	h := newHub(t)
	h.repo("org/shards", map[string]int64{"m-00001-of-00002.gguf": 1, "m-00002-of-00002.gguf": 1})
	h.repo("org/nogguf", map[string]int64{"model.safetensors": 1})
	c := openCatalog(t, h, 0)
	tests := []struct {
		source string
		want   string
	}{
		{"hf:org/shards", "only split GGUF"},
		{"hf:org/nogguf", "no .gguf file"},
		{"hf:org/missing", "not found or not accessible"},
		{"hf:org/repo:file.gguf", "not found (HTTP 404"},
		{"hf:org", "is not hf:<org>/<repo>"},
		{"hf:org/repo:../../etc/passwd", "not a plain path"},
		{"hf:../x/repo", "is not hf:<org>/<repo>"},
		{"ftp://host/file", "must start with"},
	}
	for _, tt := range tests {
		t.Run(tt.source, func(t *testing.T) {
			_, err := download(t, c, models.DownloadRequest{Source: tt.source, ModelID: "m"})
			if !errors.Is(err, models.ErrSource) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "hf_secret_token") {
				t.Fatal("the token is in the error")
			}
		})
	}
	if list, _ := c.List(); len(list) != 0 {
		t.Fatalf("catalog not empty: %+v", list)
	}
}

func TestDownloadResumesAfterBrokenConnection(t *testing.T) {
	h := newHub(t)
	content := tinyModel(t, 2048)
	const path = "/files/tiny.gguf"
	h.file(path, content)
	h.breaks[path] = 1
	c := openCatalog(t, h, 0)

	// With no retries the broken transfer fails and keeps its partial file.
	_, err := download(t, c, models.DownloadRequest{Source: h.srv.URL + path})
	if err == nil || !strings.Contains(err.Error(), "broke off") {
		t.Fatalf("first attempt: %v", err)
	}
	left := partials(t, c)
	if len(left) != 2 {
		t.Fatalf("partial files after a broken transfer: %v", left)
	}
	st, err := os.Stat(filepath.Join(c.Dir(), ".partial", "tiny.part"))
	if err != nil || st.Size() == 0 || st.Size() > int64(len(content)/2) {
		t.Fatalf("partial file: %v, %v", st, err)
	}

	// The next download resumes from there with a Range request.
	rec, err := download(t, c, models.DownloadRequest{Source: h.srv.URL + path, SHA256: strings.ToUpper(sum(content))})
	if err != nil {
		t.Fatalf("resume: %v\n%s", err, rec.text())
	}
	reqs := h.seen(path)
	if len(reqs) != 2 || reqs[1].Range != "bytes="+strconv.FormatInt(st.Size(), 10)+"-" || reqs[1].IfRange == "" {
		t.Fatalf("requests %+v, want the second to resume at %d", reqs, st.Size())
	}
	if !strings.Contains(rec.text(), "resuming") || rec.progress[0][0] != st.Size() {
		t.Fatalf("resume not narrated (progress %v):\n%s", rec.progress[:1], rec.text())
	}
	m, err := c.Get("tiny")
	if err != nil || m.SHA256 != sum(content) || m.SizeBytes != int64(len(content)) {
		t.Fatalf("record %+v, %v", m, err)
	}
	if left := partials(t, c); len(left) != 0 {
		t.Fatalf("partial files left: %v", left)
	}
}

func TestDownloadRetriesByItself(t *testing.T) {
	h := newHub(t)
	content := tinyModel(t, 1024)
	h.file("/a.gguf", content)
	h.file("/b.gguf", content)
	h.breaks["/a.gguf"], h.breaks["/b.gguf"] = 2, 1
	h.noRange["/b.gguf"] = true
	c := openCatalog(t, h, 3)

	rec, err := download(t, c, models.DownloadRequest{Source: h.srv.URL + "/a.gguf"})
	if err != nil || len(h.seen("/a.gguf")) != 3 || !strings.Contains(rec.text(), "retry 2 of 3") {
		t.Fatalf("download with retries: %v, %d requests\n%s", err, len(h.seen("/a.gguf")), rec.text())
	}
	// A server that ignores Range: the download starts over and still
	// ends with the right file.
	rec, err = download(t, c, models.DownloadRequest{Source: h.srv.URL + "/b.gguf"})
	if err != nil || !strings.Contains(rec.text(), "starting over") {
		t.Fatalf("download from a server without ranges: %v\n%s", err, rec.text())
	}
	if m, err := c.Get("b"); err != nil || m.SHA256 != sum(content) {
		t.Fatalf("record %+v, %v", m, err)
	}
}

func TestDownloadChecksumMismatch(t *testing.T) {
	h := newHub(t)
	content := tinyModel(t, 64)
	h.file("/m.gguf", content)
	wrong := strings.Repeat("ab", 32)
	h.lfsFile("/org/repo/resolve/main/m.gguf", content, wrong)
	c := openCatalog(t, h, 3)

	for name, req := range map[string]models.DownloadRequest{
		"requested sha256": {Source: h.srv.URL + "/m.gguf", SHA256: wrong},
		"hub sha256":       {Source: "hf:org/repo:m.gguf"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := download(t, c, req)
			if !errors.Is(err, models.ErrChecksum) || !strings.Contains(err.Error(), wrong) || !strings.Contains(err.Error(), sum(content)) {
				t.Fatalf("error %v, want a mismatch naming both hashes", err)
			}
			if list, _ := c.List(); len(list) != 0 {
				t.Fatalf("catalog holds %+v", list)
			}
			if left := partials(t, c); len(left) != 0 {
				t.Fatalf("partial files left: %v", left)
			}
		})
	}
	// The hub's sha256, when right, is what the record keeps.
	h.lfsFile("/org/good/resolve/main/m.gguf", content, sum(content))
	rec, err := download(t, c, models.DownloadRequest{Source: "hf:org/good:m.gguf"})
	if err != nil || !strings.Contains(rec.text(), "verified") {
		t.Fatalf("%v\n%s", err, rec.text())
	}
}

func TestDownloadSourceErrors(t *testing.T) {
	h := newHub(t)
	big := h.srv.URL + "/huge.gguf"
	h.huge["/huge.gguf"] = true
	// Under the size cap, so that the disk is what refuses it.
	c := openLimited(t, h, func(o *models.Options) { o.MaxModelBytes = 1 << 62 })

	_, err := download(t, c, models.DownloadRequest{Source: h.srv.URL + "/nothing-here.gguf"})
	if !errors.Is(err, models.ErrSource) || !strings.Contains(err.Error(), "not found (HTTP 404") {
		t.Fatalf("404: %v", err)
	}
	if runtime.GOOS != "linux" {
		t.Skip("free disk space is measured on Linux only")
	}
	_, err = download(t, c, models.DownloadRequest{Source: big})
	if !errors.Is(err, models.ErrNoSpace) || !strings.Contains(err.Error(), "free") {
		t.Fatalf("no space: %v", err)
	}
	if left := partials(t, c); len(left) != 0 {
		t.Fatalf("partial files left: %v", left)
	}
}

func TestDownloadBadModelIDs(t *testing.T) {
	h := newHub(t)
	h.file("/m.gguf", []byte("not a gguf file"))
	c := openCatalog(t, h, 0)
	for _, id := range []string{"../escape", "a/b", ".hidden", "a..b", strings.Repeat("x", 129), "sp ace"} {
		if _, err := download(t, c, models.DownloadRequest{Source: h.srv.URL + "/m.gguf", ModelID: id}); !errors.Is(err, models.ErrInvalidID) {
			t.Errorf("download as %q: %v", id, err)
		}
		if _, err := c.Get(id); !errors.Is(err, models.ErrInvalidID) {
			t.Errorf("get %q: %v", id, err)
		}
		if err := c.Delete(id); !errors.Is(err, models.ErrInvalidID) {
			t.Errorf("delete %q: %v", id, err)
		}
	}
	// A URL that names no file gives no id to derive.
	if _, err := download(t, c, models.DownloadRequest{Source: h.srv.URL + "/"}); !errors.Is(err, models.ErrInvalidID) {
		t.Errorf("download of a directory URL: %v", err)
	}
	// Names from the source are sanitised, never used as paths; a file that
	// is not GGUF is kept without metadata.
	h.file("/dir/..%2F..%2Fweird name!.bin", []byte("not a gguf file"))
	h.file("/dir/../../weird name!.bin", []byte("not a gguf file"))
	rec, err := download(t, c, models.DownloadRequest{Source: h.srv.URL + "/dir/..%2F..%2Fweird%20name%21.bin"})
	if err != nil {
		t.Fatalf("%v\n%s", err, rec.text())
	}
	list, _ := c.List()
	if len(list) != 1 || list[0].ModelID != "weird-name-" || list[0].File != "weird-name-.bin" || list[0].Architecture != "" {
		t.Fatalf("list %+v", list)
	}
}

func TestDownloadConcurrentJoins(t *testing.T) {
	h := newHub(t)
	content := tinyModel(t, 1024)
	release := make(chan struct{})
	h.file("/m.gguf", content)
	h.stall["/m.gguf"] = release
	c := openCatalog(t, h, 0)

	joined := make(chan struct{})
	started := make(chan struct{})
	var once, onceStart sync.Once
	var wg sync.WaitGroup
	results := make([]api.Model, 2)
	errs := make([]error, 2)
	for i := range 2 {
		rec := &recorder{
			onSay: func(msg string) {
				if strings.Contains(msg, "joining download already in progress") {
					once.Do(func() { close(joined) })
				}
			},
			onProg: func(done, _ int64) {
				if done > 0 {
					onceStart.Do(func() { close(started) })
				}
			},
		}
		if i == 1 {
			<-started // the second asks while the first is mid-transfer
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = c.Download(context.Background(), models.DownloadRequest{Source: h.srv.URL + "/m.gguf"}, rec.prog, rec.say)
		}()
	}
	select {
	case <-joined:
	case <-time.After(5 * time.Second):
		t.Fatal("the second download did not join the first")
	}
	if err := c.Delete("m"); !errors.Is(err, models.ErrDownloading) || !strings.Contains(err.Error(), "being downloaded") {
		t.Fatalf("delete during the download: %v", err)
	}
	close(release)
	wg.Wait()
	for i := range 2 {
		if errs[i] != nil || results[i].SHA256 != sum(content) {
			t.Fatalf("caller %d: %+v, %v", i, results[i], errs[i])
		}
	}
	if n := len(h.seen("/m.gguf")); n != 1 {
		t.Fatalf("%d transfers at the server, want 1", n)
	}
}

func TestDownloadCancelLeavesNoPartial(t *testing.T) {
	h := newHub(t)
	h.file("/m.gguf", tinyModel(t, 1024))
	h.stall["/m.gguf"] = make(chan struct{}) // never released
	c := openCatalog(t, h, 3)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rec := &recorder{onProg: func(done, _ int64) {
		if done > 0 {
			cancel()
		}
	}}
	_, err := c.Download(ctx, models.DownloadRequest{Source: h.srv.URL + "/m.gguf"}, rec.prog, rec.say)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled download: %v", err)
	}
	if left := partials(t, c); len(left) != 0 {
		t.Fatalf("partial files left after cancel: %v", left)
	}
	if list, _ := c.List(); len(list) != 0 {
		t.Fatalf("catalog holds %+v", list)
	}
}

func TestDelete(t *testing.T) {
	h := newHub(t)
	h.file("/m.gguf", tinyModel(t, 16))
	c := openCatalog(t, h, 0)
	if _, err := download(t, c, models.DownloadRequest{Source: h.srv.URL + "/m.gguf"}); err != nil {
		t.Fatal(err)
	}
	p, _ := c.Path("m")
	if err := c.Delete("m"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get("m"); !errors.Is(err, models.ErrNotFound) {
		t.Fatalf("get after delete: %v", err)
	}
	if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("file still there: %v", err)
	}
	if err := c.Delete("m"); !errors.Is(err, models.ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	if entries, _ := os.ReadDir(c.Dir()); len(entries) != 1 {
		t.Fatalf("models dir holds %v, want only .partial", entries)
	}
}

// A download never connects to a link-local address, where cloud machines
// serve their credentials: not named directly, nor reached by a redirect
// from a server it may use. Loopback and private addresses stay usable.
func TestDownloadRefusesLinkLocal(t *testing.T) {
	redirect := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/x.gguf" {
			http.NotFound(w, r)
			return
		}
		http.Redirect(w, r, "http://169.254.169.254/latest/meta-data/iam/security-credentials/role", http.StatusFound)
	}))
	defer redirect.Close()
	c, err := models.Open(t.TempDir(), models.Options{Retries: 1, RetryDelay: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	for _, src := range []string{"http://169.254.169.254/latest/meta-data/x.gguf", "http://[fe80::1]:8080/x.gguf", redirect.URL + "/x.gguf"} {
		_, err := download(t, c, models.DownloadRequest{Source: src, ModelID: "metadata"})
		if err == nil || !strings.Contains(err.Error(), "link-local") {
			t.Errorf("%s: %v, want refused as link-local", src, err)
		}
	}
	if left := partials(t, c); len(left) != 0 {
		t.Fatalf("partial files left: %v", left)
	}
	// The loopback server itself is a source like any other: a 404 there
	// is its answer, not a refusal.
	if _, err := download(t, c, models.DownloadRequest{Source: redirect.URL + "/other.gguf", ModelID: "local"}); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("a loopback source: %v", err)
	}
}
