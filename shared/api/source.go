package api

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

// Source is a model_download source as written: a Hugging Face file,
// hf:<org>/<repo>[:<file>], or an http(s) URL. ParseSource checks its form;
// whether the file exists is for the hive that fetches it to find out.
type Source struct {
	// HF: Org and Repo, and File, "" when the hive is to pick one.
	HF              bool
	Org, Repo, File string
	// URL: the parsed URL, with a host.
	URL *url.URL
}

// BadSource begins the error of a model_download that failed for its
// source: malformed, not found, or refused by the server that has it. It
// is the client's to fix, where other failures are the cluster's.
const BadSource = "bad source"

var hfNameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$`)

// HFName reports whether s is a Hugging Face organisation or repo name.
func HFName(s string) bool { return hfNameRe.MatchString(s) && !strings.Contains(s, "..") }

// ParseSource reads a source, or says what is wrong with its form.
func ParseSource(raw string) (Source, error) {
	switch {
	case len(raw) > MaxStringField || hasControl(raw):
		return Source{}, fmt.Errorf("source is too long or holds control characters")
	case strings.HasPrefix(raw, "hf:"):
		repoPart, file, named := strings.Cut(strings.TrimPrefix(raw, "hf:"), ":")
		org, repo, ok := strings.Cut(repoPart, "/")
		if !ok || !HFName(org) || !HFName(repo) {
			return Source{}, fmt.Errorf("source %q is not hf:<org>/<repo>[:<file>]", clip(raw))
		}
		if named && !ValidRepoFile(file) {
			return Source{}, fmt.Errorf("file %q in source %s is not a plain path inside the repo", clip(file), clip(raw))
		}
		return Source{HF: true, Org: org, Repo: repo, File: file}, nil
	case strings.HasPrefix(raw, "http://"), strings.HasPrefix(raw, "https://"):
		u, err := url.Parse(raw)
		if err != nil || u.Host == "" || u.Hostname() == "" {
			return Source{}, fmt.Errorf("source %q is not a valid URL with a host", clip(raw))
		}
		return Source{URL: u}, nil
	}
	return Source{}, fmt.Errorf("source %q must start with hf:, http:// or https://", clip(raw))
}

// ValidRepoFile reports whether f names a file inside a repo: a relative
// path of plain segments, no empty, "." or ".." segment, no backslash or
// control character.
func ValidRepoFile(f string) bool {
	if f == "" || len(f) > 1024 || strings.ContainsAny(f, "\\") || hasControl(f) {
		return false
	}
	for _, s := range strings.Split(f, "/") {
		if s == "" || s == "." || s == ".." {
			return false
		}
	}
	return true
}

// RedactURL drops credentials, query and fragment from a URL before it is
// narrated or answered: signed URLs carry secrets there.
func RedactURL(u *url.URL) string {
	v := *u
	v.User = nil
	v.Fragment, v.RawFragment = "", ""
	hadQuery := v.RawQuery != ""
	v.RawQuery = ""
	if hadQuery {
		return v.String() + "?…"
	}
	return v.String()
}

// RedactSource is a source fit to show to others: a URL without its
// credentials, query or fragment.
func RedactSource(raw string) string {
	if s, err := ParseSource(raw); err == nil && s.URL != nil {
		return RedactURL(s.URL)
	}
	return clip(raw)
}
