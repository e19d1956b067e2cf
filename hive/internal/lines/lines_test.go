package lines_test

import (
	"strings"
	"testing"

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
			buf = lines.Cut(buf, []byte(in[i:min(i+c.step, len(in))]), func(l []byte) { got = append(got, string(l)) })
		}
		if strings.Join(got, "|") != strings.Join(c.want, "|") || string(buf) != "partial" {
			t.Errorf("step %d: %d lines, left %q", c.step, len(got), buf)
		}
	}
}
