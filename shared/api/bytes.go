package api

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// byteUnits are the suffixes ParseBytes accepts, lower-cased: binary for
// K, KiB and the like, decimal for KB and the like.
var byteUnits = map[string]float64{
	"": 1, "b": 1,
	"k": 1 << 10, "kib": 1 << 10, "kb": 1e3,
	"m": 1 << 20, "mib": 1 << 20, "mb": 1e6,
	"g": 1 << 30, "gib": 1 << 30, "gb": 1e9,
	"t": 1 << 40, "tib": 1 << 40, "tb": 1e12,
	"p": 1 << 50, "pib": 1 << 50, "pb": 1e15,
}

// ParseBytes reads a size for people: a plain byte count ("1048576"), or a
// number with a unit ("256GiB", "5 GiB", "1.5G", "500MB"). K, M, G, T and P
// alone are binary, like KiB; KB, MB and so on decimal.
func ParseBytes(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := strings.IndexFunc(t, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	if i < 0 {
		i = len(t)
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	mult, ok := byteUnits[unit]
	if !ok || num == "" {
		return 0, fmt.Errorf("size %q is not a byte count or a number with a unit (B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)", clip(s))
	}
	if !strings.Contains(num, ".") {
		n, err := strconv.ParseInt(num, 10, 64)
		if err == nil && n <= math.MaxInt64/int64(mult) {
			return n * int64(mult), nil
		}
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f*mult >= math.MaxInt64 {
		return 0, fmt.Errorf("size %q is not a byte count, or too large", clip(s))
	}
	return int64(f * mult), nil
}

// FormatBytes writes n in the largest binary unit that divides it, so that
// a limit reads as it was likely set: 1 GiB, 1536 KiB, 1000 B.
func FormatBytes(n int64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	i := 0
	for i < len(units)-1 && n != 0 && n%1024 == 0 {
		n /= 1024
		i++
	}
	return fmt.Sprintf("%d %s", n, units[i])
}

// ByteSize is a command-line flag of bytes, written as ParseBytes reads it.
type ByteSize int64

func (b *ByteSize) String() string {
	if b == nil || *b == 0 {
		return "0"
	}
	return strings.ReplaceAll(FormatBytes(int64(*b)), " ", "")
}

// Set parses a flag's value.
func (b *ByteSize) Set(s string) error {
	n, err := ParseBytes(s)
	if err != nil {
		return err
	}
	*b = ByteSize(n)
	return nil
}
