package models

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"regexp"
	"sort"
	"strings"

	"rbee.dev/shared/api"
)

// source is a download resolved to one file: where to fetch it and what it
// is called.
type source struct {
	// canonical names the file for the record and for matching a repeated
	// download: hf:<org>/<repo>:<file>, or the URL as given.
	canonical string
	// url is what to GET.
	url string
	// display is url without credentials or query, safe to narrate.
	display string
	// hf sources get the token and trust the hub's sha256 headers.
	hf bool
	// file is the source's file name, used only to derive an id and an
	// extension, never as a path.
	file string
	// size is the file's size as a hub listing states it; 0 when unknown.
	size int64
}

var (
	shardRe = regexp.MustCompile(`(?i)-\d{5}-of-\d{5}\.gguf$`)
	extRe   = regexp.MustCompile(`^[a-z0-9]{1,16}$`)
)

// resolve turns a request's source into one file to fetch. A hf: source
// that names no file lists the repo and picks a quantisation.
func (c *Catalog) resolve(ctx context.Context, raw string, say func(level, msg string)) (source, error) {
	src, err := api.ParseSource(raw)
	if err != nil {
		return source{}, fmt.Errorf("%w: %v", ErrSource, err)
	}
	if !src.HF {
		return source{canonical: raw, url: raw, display: api.RedactURL(src.URL), file: path.Base(src.URL.Path)}, nil
	}
	org, repo, file := src.Org, src.Repo, src.File
	var size int64
	if file == "" {
		if file, size, err = c.chooseHFFile(ctx, org, repo, say); err != nil {
			return source{}, err
		}
	}
	segs := strings.Split(file, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	u := c.opts.HFEndpoint + "/" + org + "/" + repo + "/resolve/main/" + strings.Join(segs, "/")
	display := u
	if pu, err := url.Parse(u); err == nil {
		display = api.RedactURL(pu)
	}
	return source{canonical: "hf:" + org + "/" + repo + ":" + file, url: u, display: display, hf: true, file: path.Base(file), size: size}, nil
}

// sibling is one file of a Hugging Face repo listing.
type sibling struct {
	Name string `json:"rfilename"`
	Size int64  `json:"size"`
}

// QuantPreference is the order in which a GGUF quantisation is chosen when
// a hf: source names no file: Q4_K_M is the usual best balance of quality
// and size, then the nearest alternatives.
var QuantPreference = []string{"Q4_K_M", "Q4_K_S", "Q5_K_M", "Q4_0", "Q8_0"}

func (c *Catalog) chooseHFFile(ctx context.Context, org, repo string, say func(level, msg string)) (string, int64, error) {
	u := c.opts.HFEndpoint + "/api/models/" + org + "/" + repo + "?blobs=true"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", 0, fmt.Errorf("%w: %v", ErrSource, err)
	}
	c.authorize(req)
	resp, err := c.opts.Client.Do(req)
	if err != nil {
		return "", 0, fmt.Errorf("list files of %s/%s on %s: %w", org, repo, c.opts.HFEndpoint, unwrapURLError(err))
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound, resp.StatusCode == http.StatusUnauthorized, resp.StatusCode == http.StatusForbidden:
		return "", 0, fmt.Errorf("%w: repo %s/%s not found or not accessible on %s (HTTP %d); check the name, and set HF_TOKEN on the hive for a private or gated repo",
			ErrSource, org, repo, c.opts.HFEndpoint, resp.StatusCode)
	case resp.StatusCode != http.StatusOK:
		return "", 0, fmt.Errorf("list files of %s/%s on %s: HTTP %d", org, repo, c.opts.HFEndpoint, resp.StatusCode)
	}
	var listing struct {
		Siblings []sibling `json:"siblings"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&listing); err != nil {
		return "", 0, fmt.Errorf("list files of %s/%s: unreadable answer: %w", org, repo, err)
	}
	file, why, err := chooseGGUF(listing.Siblings)
	if err != nil {
		return "", 0, fmt.Errorf("%w: repo %s/%s: %v", ErrSource, org, repo, err)
	}
	say(api.LevelInfo, fmt.Sprintf("chose %s from %s/%s: %s", file, org, repo, why))
	var size int64
	for _, f := range listing.Siblings {
		if f.Name == file && f.Size > 0 {
			size = f.Size
		}
	}
	return file, size, nil
}

// chooseGGUF picks one file from a repo listing and says why.
func chooseGGUF(files []sibling) (string, string, error) {
	var ggufs []sibling
	shards := 0
	for _, f := range files {
		low := strings.ToLower(f.Name)
		switch {
		case !strings.HasSuffix(low, ".gguf") || !api.ValidRepoFile(f.Name):
		case strings.Contains(low, "mmproj"):
			// A multimodal projector is not a model on its own.
		case shardRe.MatchString(low):
			shards++
		default:
			ggufs = append(ggufs, f)
		}
	}
	if len(ggufs) == 0 {
		if shards > 0 {
			return "", "", fmt.Errorf("it holds only split GGUF files (name-00001-of-0000N.gguf), which a hive cannot serve as one model yet; name a single-file GGUF with hf:<org>/<repo>:<file>")
		}
		return "", "", fmt.Errorf("it holds no .gguf file; name a file with hf:<org>/<repo>:<file>")
	}
	sort.Slice(ggufs, func(i, j int) bool { return ggufs[i].Name < ggufs[j].Name })
	for rank, q := range QuantPreference {
		re := regexp.MustCompile(`(?i)(^|[^a-z0-9])` + q + `([^a-z0-9_]|$)`)
		var match *sibling
		for i := range ggufs {
			if re.MatchString(path.Base(ggufs[i].Name)) && (match == nil || len(ggufs[i].Name) < len(match.Name)) {
				match = &ggufs[i]
			}
		}
		if match == nil {
			continue
		}
		if rank == 0 {
			return match.Name, q + " is the preferred quantisation: near full quality at about a third of the 16-bit size", nil
		}
		return match.Name, fmt.Sprintf("no %s file, and %s comes next in the preference order %s",
			strings.Join(QuantPreference[:rank], ", "), q, strings.Join(QuantPreference, ", ")), nil
	}
	best := ggufs[0]
	for _, f := range ggufs {
		if f.Size > 0 && (best.Size <= 0 || f.Size < best.Size) {
			best = f
		}
	}
	if best.Size <= 0 {
		return best.Name, fmt.Sprintf("none of %s is in the repo and the hub gave no sizes, so the first .gguf by name", strings.Join(QuantPreference, ", ")), nil
	}
	return best.Name, fmt.Sprintf("none of %s is in the repo, so the smallest .gguf (%s)", strings.Join(QuantPreference, ", "), HumanBytes(best.Size)), nil
}

// deriveID makes a model id from a file name: the name without its
// extension, with every character outside the id alphabet replaced by '-'.
func deriveID(file string) (string, error) {
	name := file
	if i := strings.LastIndexByte(name, '.'); i > 0 {
		name = name[:i]
	}
	b := []byte(name)
	for i, ch := range b {
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '.' || ch == '_' || ch == '-') {
			b[i] = '-'
		}
	}
	id := string(b)
	for strings.Contains(id, "..") {
		id = strings.ReplaceAll(id, "..", ".")
	}
	id = strings.TrimLeft(id, ".-_")
	if len(id) > api.MaxModelID {
		id = id[:api.MaxModelID]
	}
	if !api.ValidModelID(id) {
		return "", fmt.Errorf("%w: cannot derive a model_id from the file name %q; give model_id", ErrInvalidID, clip(file))
	}
	return id, nil
}

// deriveExt is the catalog file's extension: the source's, lower-cased, when
// it is short and plain, else "bin". Never "json", which would collide with
// the records.
func deriveExt(file string) string {
	i := strings.LastIndexByte(file, '.')
	if i <= 0 {
		return "bin"
	}
	ext := strings.ToLower(file[i+1:])
	if !validExt(ext) {
		return "bin"
	}
	return ext
}

func validExt(ext string) bool { return extRe.MatchString(ext) && ext != "json" }

// unwrapURLError drops the URL that net/http puts into its errors (it may
// carry a signed query) and keeps the cause.
func unwrapURLError(err error) error {
	if ue, ok := err.(*url.Error); ok {
		return ue.Err
	}
	return err
}

func (c *Catalog) authorize(req *http.Request) {
	if c.opts.HFToken != "" {
		req.Header.Set("Authorization", "Bearer "+c.opts.HFToken)
	}
}

// HumanBytes renders a byte count for people: 12.5 MiB.
func HumanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
