package lines_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	"rbee.dev/hive/internal/lines"
)

// Lines come without their ends; what has no end yet is held, and passed
// on in parts of Max bytes once that much has come.
func TestCut(t *testing.T) {
	long := strings.Repeat("x", lines.Max)
	in := "a\r\nb\n\nc" + long + "d\npartial"
	cases := []struct {
		step int
		want []string
	}{
		{1, []string{"a", "b", "", "c" + long[:lines.Max-1], "xd"}},
		{len(in), []string{"a", "b", "", "c" + long + "d"}},
	}
	for _, c := range cases {
		var got []string
		var buf []byte
		for i := 0; i < len(in); i += c.step {
			buf = lines.Cut(buf, []byte(in[i:min(i+c.step, len(in))]), func(l []byte, _ bool) { got = append(got, string(l)) })
		}
		if strings.Join(got, "|") != strings.Join(c.want, "|") || string(buf) != "partial" {
			t.Errorf("step %d: %d lines, left %q", c.step, len(got), buf)
		}
	}
}

// A long line is cut between characters, never inside one, and its parts
// say that the line goes on.
func TestCutKeepsCharactersWhole(t *testing.T) {
	in := strings.Repeat("a", lines.Max-1) + "\U0001F41D" + strings.Repeat("é", lines.Max) + "\n"
	var parts []string
	var ended []bool
	for _, step := range []int{1, 7, 4096} {
		parts, ended = nil, nil
		var buf []byte
		for i := 0; i < len(in); i += step {
			buf = lines.Cut(buf, []byte(in[i:min(i+step, len(in))]), func(l []byte, e bool) {
				parts, ended = append(parts, string(l)), append(ended, e)
			})
		}
		for i, p := range parts {
			if !utf8.ValidString(p) || len(p) > lines.Max || ended[i] != (i == len(parts)-1) {
				t.Fatalf("step %d: part %d of %d: %d bytes, valid %v, ended %v", step, i, len(parts), len(p), utf8.ValidString(p), ended[i])
			}
		}
		if strings.Join(parts, "") != strings.TrimSuffix(in, "\n") || len(buf) != 0 {
			t.Fatalf("step %d: the parts do not join into the line", step)
		}
	}
}
