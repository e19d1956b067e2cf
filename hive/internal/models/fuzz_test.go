package models

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"rbee.dev/shared/api"
)

// fuzzHub answers every repo listing with the fuzzer's file names, so the
// quantisation choice sees hostile names as a compromised hub would send.
type fuzzHub struct{ names []string }

func (h fuzzHub) RoundTrip(r *http.Request) (*http.Response, error) {
	if !strings.HasPrefix(r.URL.Path, "/api/models/") {
		return &http.Response{StatusCode: http.StatusNotFound, Body: http.NoBody, Request: r}, nil
	}
	var listing struct {
		Siblings []sibling `json:"siblings"`
	}
	for i, n := range h.names {
		listing.Siblings = append(listing.Siblings, sibling{Name: n, Size: int64(len(h.names) - i)})
	}
	data, _ := json.Marshal(listing)
	return &http.Response{StatusCode: http.StatusOK, Body: io.NopCloser(strings.NewReader(string(data))), Request: r}, nil
}

const fuzzEndpoint = "https://hub.example"

// Whatever the source and whatever the hub lists, resolving never panics,
// fetches only http(s), never names a file outside the repo, and any model
// id and catalog file name derived from it stay inside the models directory.
func FuzzSource(f *testing.F) {
	for _, s := range [][2]string{
		{"hf:org/repo:model.Q4_K_M.gguf", ""},
		{"hf:org/repo:sub/dir/model.gguf", ""},
		{"hf:org/repo", "a.Q8_0.gguf\nb.Q4_K_M.gguf\nmmproj.gguf"},
		{"hf:org/repo", "../../etc/passwd.gguf\n/abs.gguf\nok.gguf"},
		{"hf:org/repo", "x-00001-of-00002.gguf"},
		{"hf:org/repo:../escape.gguf", ""},
		{"hf:org/repo:/abs.gguf", ""},
		{`hf:org/repo:a\..\b.gguf`, ""},
		{"hf:../repo:f", ""},
		{"hf:org/repo:a:b.gguf", ""},
		{"https://example.com/models/llama.gguf", ""},
		{"https://user:secret@example.com/x/..?sig=abc#frag", ""},
		{"http://example.com", ""},
		{"http:///no-host", ""},
		{"ftp://example.com/x.gguf", ""},
		{"file:///etc/passwd", ""},
		{"https://example.com/%2e%2e/%2fetc%2fpasswd", ""},
		{"https://example.com/" + strings.Repeat("é", 200) + ".gguf", ""},
	} {
		f.Add(s[0], s[1])
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, raw, listing string) {
		c := &Catalog{dir: dir, opts: Options{HFEndpoint: fuzzEndpoint, Client: &http.Client{Transport: fuzzHub{names: strings.Split(listing, "\n")}}}}
		src, err := c.resolve(context.Background(), raw, func(string, string) {})
		if err != nil {
			if msg := err.Error(); !utf8.ValidString(msg) || len(msg) > 4<<10 {
				t.Fatalf("error %d bytes or invalid UTF-8: %.200q", len(msg), msg)
			}
			return
		}
		u, err := url.Parse(src.url)
		if err != nil {
			t.Fatalf("%q resolved to unparsable URL %q: %v", raw, src.url, err)
		}
		if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
			t.Fatalf("%q resolved to %q: only http(s) URLs with a host may be fetched", raw, src.url)
		}
		if d, err := url.Parse(strings.TrimSuffix(src.display, "?…")); err != nil || d.User != nil || d.RawQuery != "" || d.Fragment != "" {
			t.Fatalf("%q displays as %q: credentials, query or fragment left in", raw, src.display)
		}
		if strings.HasPrefix(raw, "hf:") {
			checkHF(t, raw, src, u)
		}
		if id, err := deriveID(src.file); err == nil {
			if !api.ValidModelID(id) {
				t.Fatalf("%q: derived model id %q is not valid", raw, id)
			}
			for _, name := range []string{id + "." + deriveExt(src.file), id + recordExt} {
				p := filepath.Join(dir, name)
				if rel, err := filepath.Rel(dir, p); err != nil || rel != name || strings.HasPrefix(rel, "..") {
					t.Fatalf("%q: catalog file %q is not a plain name in the models dir (%q)", raw, name, p)
				}
			}
		}
	})
}

// checkHF asserts a resolved hf: source names a file inside its repo and
// fetches it from the hub's resolve path for that repo.
func checkHF(t *testing.T, raw string, src source, u *url.URL) {
	t.Helper()
	if !src.hf {
		t.Fatalf("%q not marked as a hub source", raw)
	}
	rest, ok := strings.CutPrefix(src.canonical, "hf:")
	if !ok {
		t.Fatalf("%q: canonical %q", raw, src.canonical)
	}
	repo, file, ok := strings.Cut(rest, ":")
	org, name, ok2 := strings.Cut(repo, "/")
	if !ok || !ok2 || !api.HFName(org) || !api.HFName(name) {
		t.Fatalf("%q: canonical %q has no hf:<org>/<repo>:<file>", raw, src.canonical)
	}
	if file == "" || strings.HasPrefix(file, "/") || strings.Contains(file, `\`) {
		t.Fatalf("%q: file %q is not relative", raw, file)
	}
	for _, seg := range strings.Split(file, "/") {
		if seg == "" || seg == "." || seg == ".." {
			t.Fatalf("%q: file %q has a %q segment", raw, file, seg)
		}
	}
	prefix := "/" + org + "/" + name + "/resolve/main/"
	if u.Host != "hub.example" || !strings.HasPrefix(u.Path, prefix) || u.RawQuery != "" || u.Fragment != "" {
		t.Fatalf("%q fetches %q, want %s%s…", raw, src.url, fuzzEndpoint, prefix)
	}
	if got := strings.TrimPrefix(u.Path, prefix); got != file {
		t.Fatalf("%q fetches file %q, want %q", raw, got, file)
	}
	if src.file != file[strings.LastIndexByte(file, '/')+1:] {
		t.Fatalf("%q: file name %q, want the last segment of %q", raw, src.file, file)
	}
}
