// Package bytesize reads and writes sizes the way every dstack command
// takes them: a number of bytes, or a number with a unit, where KiB, MiB,
// GiB and TiB (and K, M, G, T) are powers of 1024 and KB, MB, GB and TB
// powers of 1000, case-insensitively: 65536, 400MB, 1.5GiB, 256m. `dstack
// run --max-code-size` and `dstack server --max-code-size` share it, so a
// size means the same to both.
package bytesize

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Parse reads a size; its error says what is accepted.
func Parse(s string) (int64, error) {
	in := strings.TrimSpace(s)
	i := 0
	for i < len(in) && (in[i] >= '0' && in[i] <= '9' || in[i] == '.') {
		i++
	}
	num, unit := in[:i], strings.ToLower(strings.TrimSpace(in[i:]))
	bad := fmt.Errorf("size %q: give a number of bytes or a size such as 256MiB or 1GB", s)
	if num == "" {
		return 0, bad
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, bad
	}
	mult := map[string]float64{
		"": 1, "b": 1,
		"k": 1 << 10, "kib": 1 << 10, "kb": 1e3,
		"m": 1 << 20, "mib": 1 << 20, "mb": 1e6,
		"g": 1 << 30, "gib": 1 << 30, "gb": 1e9,
		"t": 1 << 40, "tib": 1 << 40, "tb": 1e12,
	}[unit]
	if mult == 0 {
		return 0, bad
	}
	v *= mult
	if v >= math.MaxInt64 {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return int64(v), nil
}

// Format writes n bytes for people: "512 B", "1.5 KiB", "256 MiB".
func Format(n int64) string {
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	units := []string{"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	v := float64(n)
	i := -1
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	if v < 10 && v != math.Trunc(v) {
		return fmt.Sprintf("%.1f %s", v, units[i])
	}
	return fmt.Sprintf("%.0f %s", v, units[i])
}

// Exact writes n in the largest binary unit that holds it exactly (256MiB,
// 1GiB), in bytes otherwise (65537), so that Parse reads it back as n: the
// way to show a size the user may type back as a flag's value.
func Exact(n int64) string {
	for _, u := range []struct {
		shift uint
		name  string
	}{{40, "TiB"}, {30, "GiB"}, {20, "MiB"}, {10, "KiB"}} {
		if n >= 1<<u.shift && n%(1<<u.shift) == 0 {
			return strconv.FormatInt(n>>u.shift, 10) + u.name
		}
	}
	return strconv.FormatInt(n, 10)
}

// Value is a flag (pflag.Value) holding a size: `fs.Var(bytesize.Value{P:
// &n}, "max-code-size", "...")`.
type Value struct{ P *int64 }

// String is the size in Exact's words.
func (v Value) String() string {
	if v.P == nil {
		return ""
	}
	return Exact(*v.P)
}

// Set parses a size; zero or less is refused.
func (v Value) Set(s string) error {
	n, err := Parse(s)
	if err != nil {
		return err
	}
	if n <= 0 {
		return fmt.Errorf("size %q: give a size above zero", s)
	}
	*v.P = n
	return nil
}

// Type names the value in help: "--max-code-size SIZE".
func (Value) Type() string { return "SIZE" }
