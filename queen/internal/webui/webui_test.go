package webui

import (
	"io/fs"
	"regexp"
	"strings"
	"testing"
)

// maxConsoleBytes is the page weight the console must stay under: every
// embedded file together, uncompressed.
const maxConsoleBytes = 200 << 10

// The whole console stays small, and every file index.html loads is
// embedded and loaded from the queen itself, with no inline script or
// style for the CSP to block.
func TestConsoleWeightAndAssets(t *testing.T) {
	total := 0
	err := fs.WalkDir(files, "static", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := files.ReadFile(path)
		total += len(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("console: %d bytes uncompressed", total)
	if total >= maxConsoleBytes {
		t.Fatalf("console is %d bytes, over the %d-byte budget", total, maxConsoleBytes)
	}

	page, err := files.ReadFile("static/index.html")
	if err != nil {
		t.Fatal(err)
	}
	html := string(page)
	if strings.Contains(html, "<style") || regexp.MustCompile(`\sstyle=|\son[a-z]+=|<script>`).MatchString(html) {
		t.Fatal("index.html has inline script or style, which the CSP blocks")
	}
	refs := regexp.MustCompile(`(?:src|href)="([^"#]+)"`).FindAllStringSubmatch(html, -1)
	if len(refs) < 3 {
		t.Fatalf("index.html loads only %v", refs)
	}
	for _, m := range refs {
		if strings.Contains(m[1], "//") {
			t.Errorf("index.html loads %s from elsewhere", m[1])
			continue
		}
		if _, err := files.ReadFile("static/" + m[1]); err != nil {
			t.Errorf("index.html loads %s, which is not embedded", m[1])
		}
	}
	scripts, _ := fs.Glob(files, "static/*.js")
	for _, name := range scripts {
		js, _ := files.ReadFile(name)
		// The SVG namespace is a name, not a place the page loads from.
		code := strings.ReplaceAll(string(js), `"http://www.w3.org/2000/svg"`, "")
		if regexp.MustCompile(`https?://|\.style\b|setAttribute\("style"|innerHTML`).MatchString(code) {
			t.Errorf("%s reaches outside the queen, sets inline styles or writes HTML", name)
		}
	}
}
