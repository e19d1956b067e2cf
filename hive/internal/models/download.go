package models

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"rbee.dev/shared/api"
)

// DownloadRequest says what to download and what to call it.
type DownloadRequest struct {
	// Source is hf:<org>/<repo>[:<file>] or an http(s) URL.
	Source string
	// ModelID names the catalog entry; empty derives it from the file name.
	ModelID string
	// SHA256 is the expected checksum (64 hex digits); empty takes the
	// hub's, if it gives one, or checks nothing.
	SHA256 string
}

// Progress receives bytes done and the total (-1 when unknown).
type Progress func(done, total int64)

// Say narrates one step at a level (api.LevelInfo, ...).
type Say func(level, msg string)

// ProgressInterval is the most often progress is reported, apart from each
// whole percent, which is always reported.
const ProgressInterval = 250 * time.Millisecond

// flight is one download in progress; callers asking for the same model
// while it runs wait for it instead of fetching a second copy.
type flight struct {
	source string
	done   chan struct{}
	model  api.Model
	err    error
	// cancelled is set when the download ended because its own caller went
	// away, so those who joined it start it again rather than fail.
	cancelled bool

	mu        sync.Mutex
	listeners []Progress
}

func (f *flight) listen(p Progress) {
	f.mu.Lock()
	f.listeners = append(f.listeners, p)
	f.mu.Unlock()
}

func (f *flight) report(done, total int64) {
	f.mu.Lock()
	ls := append([]Progress(nil), f.listeners...)
	f.mu.Unlock()
	for _, p := range ls {
		p(done, total)
	}
}

// Download puts a model into the catalog and returns its record. A model
// already there with the same source (or the requested sha256) is returned
// at once; a download of the same id already running is joined. An
// interrupted transfer resumes from its partial file; cancelling ctx stops
// the transfer and removes the partial file.
func (c *Catalog) Download(ctx context.Context, req DownloadRequest, progress Progress, say Say) (api.Model, error) {
	if progress == nil {
		progress = func(int64, int64) {}
	}
	if say == nil {
		say = func(string, string) {}
	}
	want := strings.ToLower(req.SHA256)
	if want != "" && !isSHA256(want) {
		return api.Model{}, fmt.Errorf("sha256 %q is not 64 hex digits", clip(req.SHA256))
	}
	if req.ModelID != "" {
		if err := checkID(req.ModelID); err != nil {
			return api.Model{}, err
		}
	}
	src, err := c.resolve(ctx, req.Source, say)
	if err != nil {
		return api.Model{}, err
	}
	id := req.ModelID
	if id == "" {
		if id, err = deriveID(src.file); err != nil {
			return api.Model{}, err
		}
		say(api.LevelInfo, fmt.Sprintf("model_id %s (from the file name %s)", id, clip(src.file)))
	}
	if src.size > c.opts.MaxModelBytes {
		return api.Model{}, c.tooLarge(id, src.size)
	}

	for {
		c.mu.Lock()
		if f, ok := c.flights[id]; ok {
			if f.source != src.canonical {
				c.mu.Unlock()
				return api.Model{}, fmt.Errorf("%w: model %s is being downloaded from another source right now (%s)", ErrExists, id, clip(f.source))
			}
			f.listen(progress)
			c.mu.Unlock()
			say(api.LevelInfo, fmt.Sprintf("joining download already in progress of model %s", id))
			select {
			case <-f.done:
			case <-ctx.Done():
				return api.Model{}, context.Cause(ctx)
			}
			if f.cancelled && ctx.Err() == nil {
				say(api.LevelWarn, "the download this job joined was cancelled; starting it again")
				continue
			}
			if f.err == nil && want != "" && f.model.SHA256 != want {
				return api.Model{}, fmt.Errorf("%w: model %s was downloaded with sha256 %s, not the requested %s", ErrExists, id, f.model.SHA256, want)
			}
			return f.model, f.err
		}
		if m, err := c.read(id); err == nil {
			c.mu.Unlock()
			return existing(m, src, want, say)
		}
		f := &flight{source: src.canonical, done: make(chan struct{}), listeners: []Progress{progress}}
		c.flights[id] = f
		c.mu.Unlock()

		f.model, f.err = c.fetch(ctx, id, src, want, f.report, say)
		f.cancelled = ctx.Err() != nil
		c.mu.Lock()
		delete(c.flights, id)
		c.mu.Unlock()
		close(f.done)
		return f.model, f.err
	}
}

// existing answers a download of a model the catalog already holds: the
// same file is returned, a different one is refused, so there is only ever
// one copy of each file and no id silently changes meaning.
func existing(m api.Model, src source, want string, say Say) (api.Model, error) {
	switch {
	case want != "" && want == m.SHA256, want == "" && m.Source == src.canonical:
		say(api.LevelInfo, fmt.Sprintf("model %s is already in the catalog (%s, sha256 %s); nothing to download", m.ModelID, HumanBytes(m.SizeBytes), m.SHA256))
		return m, nil
	case want != "":
		return api.Model{}, fmt.Errorf("%w: model %s is already in the catalog with sha256 %s, not the requested %s; delete it first or choose another model_id", ErrExists, m.ModelID, m.SHA256, want)
	}
	return api.Model{}, fmt.Errorf("%w: model %s is already in the catalog, downloaded from %s; delete it first or choose another model_id", ErrExists, m.ModelID, clip(m.Source))
}

// fetch downloads src into the catalog as id, resuming by itself after a
// broken connection up to Options.Retries times.
func (c *Catalog) fetch(ctx context.Context, id string, src source, want string, progress Progress, say Say) (api.Model, error) {
	part := c.partPath(id)
	st := &fetchState{meter: meter{report: progress, lastDone: -1}}
	for attempt := 0; ; attempt++ {
		m, err := c.transfer(ctx, id, src, want, st, say)
		if err == nil {
			return m, nil
		}
		if ctx.Err() != nil {
			removePartial(part)
			return api.Model{}, fmt.Errorf("download of model %s stopped, partial file removed: %w", id, context.Cause(ctx))
		}
		var t *transient
		if !errors.As(err, &t) || attempt >= c.opts.Retries {
			return api.Model{}, err
		}
		delay := c.opts.RetryDelay << attempt
		say(api.LevelWarn, fmt.Sprintf("%v; resuming in %s (retry %d of %d)", err, delay, attempt+1, c.opts.Retries))
		select {
		case <-ctx.Done():
			removePartial(part)
			return api.Model{}, fmt.Errorf("download of model %s stopped, partial file removed: %w", id, context.Cause(ctx))
		case <-time.After(delay):
		}
	}
}

// errStalled ends a transfer whose server went silent.
var errStalled = errors.New("no data from the server for too long")

// fetchState is what the attempts of one download share.
type fetchState struct {
	meter meter
	// hubSHA is the checksum the hub announced, narrated once.
	hubSHA string
}

// transient marks an error worth a retry: the partial file is kept and the
// next attempt resumes from it.
type transient struct{ err error }

func (t *transient) Error() string { return t.err.Error() }
func (t *transient) Unwrap() error { return t.err }

// partMeta is the sidecar of a partial file: what a resume must match.
type partMeta struct {
	Source       string `json:"source"`
	ETag         string `json:"etag,omitempty"`
	LastModified string `json:"last_modified,omitempty"`
	Size         int64  `json:"size"`
	SHA256       string `json:"sha256,omitempty"`
}

// validator is what If-Range carries: a strong ETag, else Last-Modified.
func (p partMeta) validator() string {
	if p.ETag != "" && !strings.HasPrefix(p.ETag, "W/") {
		return p.ETag
	}
	return p.LastModified
}

// resumable returns how many bytes of a partial download of src can be
// kept, removing a partial that cannot be resumed.
func resumable(part string, src source) (int64, partMeta) {
	var meta partMeta
	data, err := os.ReadFile(part + recordExt)
	st, serr := os.Stat(part)
	if err != nil || serr != nil || json.Unmarshal(data, &meta) != nil ||
		meta.Source != src.canonical || meta.validator() == "" || st.Size() == 0 ||
		(meta.Size > 0 && st.Size() > meta.Size) {
		removePartial(part)
		return 0, partMeta{}
	}
	return st.Size(), meta
}

// transfer makes one attempt at fetching the file.
func (c *Catalog) transfer(ctx context.Context, id string, src source, want string, st *fetchState, say Say) (api.Model, error) {
	part := c.partPath(id)
	offset, meta := resumable(part, src)
	// The kept prefix is hashed before asking for the rest, so the checksum
	// covers the whole file and the connection never idles meanwhile.
	h := sha256.New()
	if offset > 0 {
		if err := hashPrefix(ctx, part, offset, h); err != nil {
			if ctx.Err() != nil {
				return api.Model{}, context.Cause(ctx)
			}
			removePartial(part)
			offset, meta = 0, partMeta{}
			h.Reset()
		}
	}

	// A server that stops sending without closing the connection would
	// hold the job forever; a watchdog ends the request after StallTimeout
	// without a byte, and the attempt counts as a broken connection.
	if err := c.checkSpace(id, 0); err != nil {
		removePartial(part)
		return api.Model{}, err
	}
	tctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	watchdog := time.AfterFunc(c.opts.StallTimeout, func() { stop(errStalled) })
	defer watchdog.Stop()
	stalled := func(err error) error {
		if ctx.Err() == nil && errors.Is(context.Cause(tctx), errStalled) {
			return &transient{fmt.Errorf("transfer of model %s: %w", id, errStalled)}
		}
		return err
	}

	resp, hubSHA, err := c.get(tctx, src, offset, meta)
	if err != nil {
		return api.Model{}, stalled(err)
	}
	defer resp.Body.Close()

	total := resp.ContentLength
	switch resp.StatusCode {
	case http.StatusPartialContent:
		start, size, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if !ok || start != offset {
			removePartial(part)
			return api.Model{}, &transient{fmt.Errorf("the server answered the resume at byte %d with an unusable range %q; starting over", offset, resp.Header.Get("Content-Range"))}
		}
		total = size
		say(api.LevelInfo, fmt.Sprintf("resuming model %s at %s", id, progressText(offset, total)))
	case http.StatusOK:
		if offset > 0 {
			say(api.LevelInfo, "the server does not resume this file (it ignored the range request); starting over from byte 0")
			offset = 0
			h.Reset()
		}
	case http.StatusRequestedRangeNotSatisfiable:
		// Without the partial file the next request asks for no range, so
		// this starts over at most once.
		resp.Body.Close()
		removePartial(part)
		say(api.LevelInfo, fmt.Sprintf("the server refused to resume at byte %d (HTTP 416); starting over", offset))
		return c.transfer(ctx, id, src, want, st, say)
	default:
		return api.Model{}, c.statusError(resp, src)
	}

	expected := want
	if want == "" {
		expected = hubSHA
	}
	if hubSHA != "" && hubSHA != st.hubSHA {
		st.hubSHA = hubSHA
		if want == "" || want == hubSHA {
			say(api.LevelInfo, fmt.Sprintf("the hub gives sha256 %s for this file; it will be checked", hubSHA))
		} else {
			say(api.LevelWarn, fmt.Sprintf("the hub gives sha256 %s for this file, but the request asks for %s; checking against the request", hubSHA, want))
		}
	}

	if total > c.opts.MaxModelBytes {
		removePartial(part)
		return api.Model{}, c.tooLarge(id, total)
	}
	if total > 0 {
		if err := c.checkSpace(id, total-offset); err != nil {
			removePartial(part)
			return api.Model{}, err
		}
	}
	if offset == 0 {
		say(api.LevelInfo, fmt.Sprintf("downloading %s (%s) as model %s", src.display, sizeText(total), id))
	}
	meta = partMeta{Source: src.canonical, ETag: resp.Header.Get("ETag"), LastModified: resp.Header.Get("Last-Modified"), Size: total, SHA256: expected}
	if err := writeJSON(part+recordExt, meta); err != nil {
		return api.Model{}, fmt.Errorf("save partial download state: %w", err)
	}

	f, err := os.OpenFile(part, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return api.Model{}, fmt.Errorf("open partial file: %w", err)
	}
	defer f.Close()
	if err := f.Truncate(offset); err != nil {
		return api.Model{}, fmt.Errorf("truncate partial file: %w", err)
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return api.Model{}, fmt.Errorf("seek partial file: %w", err)
	}

	m := &st.meter
	m.total = total
	m.update(offset, true)
	done, err := c.copyBody(f, h, resp.Body, id, offset, m, func() { watchdog.Reset(c.opts.StallTimeout) })
	if serr := f.Sync(); err == nil && serr != nil {
		return api.Model{}, fmt.Errorf("write partial file: %w", serr)
	}
	switch {
	case errors.Is(err, ErrTooLarge), errors.Is(err, ErrNoSpace):
		// Keeping the partial file would only hold on to the space, and a
		// resume could never finish within the limits.
		_ = f.Close()
		removePartial(part)
		return api.Model{}, err
	case err != nil && ctx.Err() != nil:
		return api.Model{}, context.Cause(ctx)
	case err != nil && tctx.Err() != nil:
		return api.Model{}, stalled(err)
	case err != nil:
		return api.Model{}, &transient{fmt.Errorf("transfer of model %s broke off at %s: %w", id, progressText(done, total), unwrapURLError(err))}
	case total >= 0 && done != total:
		return api.Model{}, &transient{fmt.Errorf("transfer of model %s ended at %s", id, progressText(done, total))}
	}
	m.update(done, true)

	got := hex.EncodeToString(h.Sum(nil))
	if expected != "" && got != expected {
		removePartial(part)
		return api.Model{}, fmt.Errorf("%w for model %s: expected %s, got %s; the downloaded file was discarded", ErrChecksum, id, expected, got)
	}
	if expected != "" {
		say(api.LevelInfo, fmt.Sprintf("sha256 %s verified", got))
	}
	return c.commit(f, id, src, got, done, say)
}

// commit moves a finished partial file into the catalog and writes its
// record.
func (c *Catalog) commit(f *os.File, id string, src source, sum string, size int64, say Say) (api.Model, error) {
	part := c.partPath(id)
	if err := f.Close(); err != nil {
		return api.Model{}, fmt.Errorf("close partial file: %w", err)
	}
	rec := api.Model{
		ModelID: id, File: id + "." + deriveExt(src.file), SizeBytes: size, SHA256: sum,
		Source: src.canonical, CreatedAt: time.Now().UTC(),
	}
	// The metadata is read from the partial file, before it has a name a
	// multi-file GGUF reader might mistake for one shard of several.
	if err := readGGUF(part, &rec); err != nil {
		say(api.LevelWarn, fmt.Sprintf("%v; the model is kept without metadata", err))
	}
	if err := os.Rename(part, filepath.Join(c.dir, rec.File)); err != nil {
		return api.Model{}, fmt.Errorf("move model %s into the catalog: %w", id, err)
	}
	if err := writeJSON(c.recordPath(id), rec); err != nil {
		return api.Model{}, fmt.Errorf("write record of model %s: %w", id, err)
	}
	_ = os.Remove(part + recordExt)
	syncDir(c.dir)
	return rec, nil
}

// spaceCheckEvery is how many bytes a download writes between two looks at
// the free disk space.
const spaceCheckEvery = 4 << 20

// copyBody streams body into f and h, reporting progress, and returns the
// byte count reached. It counts the bytes it actually reads, whatever the
// headers said: past MaxModelBytes, or with the disk down to MinFreeDisk,
// it stops with ErrTooLarge or ErrNoSpace.
func (c *Catalog) copyBody(f *os.File, h io.Writer, body io.Reader, id string, done int64, m *meter, alive func()) (int64, error) {
	buf := make([]byte, 1<<20)
	checked := int64(-spaceCheckEvery)
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			alive()
			if done+int64(n) > c.opts.MaxModelBytes {
				return done, fmt.Errorf("%w: model %s grew past this hive's limit of %s (--max-model-bytes) though its source did not say it was that large; the partial file was removed",
					ErrTooLarge, id, HumanBytes(c.opts.MaxModelBytes))
			}
			if done-checked >= spaceCheckEvery {
				checked = done
				if free := c.opts.FreeSpace(c.dir); free >= 0 && free < c.opts.MinFreeDisk {
					return done, fmt.Errorf("%w for model %s: %s has %s free, under the %s --min-free-disk keeps free; stopped at %s and removed the partial file",
						ErrNoSpace, id, c.dir, HumanBytes(free), HumanBytes(c.opts.MinFreeDisk), HumanBytes(done))
				}
			}
			if _, err := f.Write(buf[:n]); err != nil {
				return done, fmt.Errorf("write partial file: %w", err)
			}
			h.Write(buf[:n])
			done += int64(n)
			m.update(done, false)
		}
		if errors.Is(rerr, io.EOF) {
			return done, nil
		}
		if rerr != nil {
			return done, rerr
		}
	}
}

// meter rate-limits progress: a report at most every ProgressInterval,
// and one at each whole percent however fast the bytes come.
type meter struct {
	total    int64
	report   Progress
	last     time.Time
	lastPct  int64
	lastDone int64
}

// update reports done when it is due, or when force is set; it never
// reports the same count twice in a row.
func (m *meter) update(done int64, force bool) {
	now := time.Now()
	pct := int64(-1)
	if m.total > 0 {
		pct = done * 100 / m.total
	}
	if done == m.lastDone || !force && now.Sub(m.last) < ProgressInterval && pct <= m.lastPct {
		return
	}
	m.last, m.lastPct, m.lastDone = now, pct, done
	m.report(done, m.total)
}

// hashPrefix feeds the first n bytes of the file at path to h.
func hashPrefix(ctx context.Context, path string, n int64, h io.Writer) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.CopyN(h, ctxReader{ctx, f}, n)
	return err
}

// ctxReader stops a long local read (hashing a big partial file) when the
// job is cancelled.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

func isSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// tooLarge refuses a model whose stated size is over the cap.
func (c *Catalog) tooLarge(id string, size int64) error {
	return fmt.Errorf("%w: model %s is %s, over this hive's limit of %s (--max-model-bytes); nothing was downloaded",
		ErrTooLarge, id, HumanBytes(size), HumanBytes(c.opts.MaxModelBytes))
}

// checkSpace refuses a download of need more bytes that would leave less
// than MinFreeDisk free, so a download never fills the disk the hive and
// its workers write logs and work files to. An unmeasurable disk passes.
func (c *Catalog) checkSpace(id string, need int64) error {
	free := c.opts.FreeSpace(c.dir)
	if free < 0 || need+c.opts.MinFreeDisk <= free {
		return nil
	}
	if need == 0 {
		return fmt.Errorf("%w for model %s: %s has only %s free, and --min-free-disk keeps %s free; nothing was downloaded",
			ErrNoSpace, id, c.dir, HumanBytes(free), HumanBytes(c.opts.MinFreeDisk))
	}
	return fmt.Errorf("%w for model %s: it needs %s more, and --min-free-disk keeps %s free, but %s has only %s free; nothing more was downloaded",
		ErrNoSpace, id, HumanBytes(need), HumanBytes(c.opts.MinFreeDisk), c.dir, HumanBytes(free))
}

// ProgressText renders download progress for narration:
// "12.5 MiB of 100.0 MiB (12%)".
func ProgressText(done, total int64) string { return progressText(done, total) }

func progressText(done, total int64) string {
	if total <= 0 {
		return HumanBytes(done)
	}
	return fmt.Sprintf("%s of %s (%d%%)", HumanBytes(done), HumanBytes(total), done*100/total)
}

func sizeText(total int64) string {
	if total < 0 {
		return "size unknown"
	}
	return HumanBytes(total)
}

// syncDir makes renames in dir durable; failure only weakens crash safety.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
}
