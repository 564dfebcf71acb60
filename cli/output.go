package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"reflect"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/dstackai/dstack/internal/bytesize"
)

// writeJSON writes v as indented JSON. A nil slice is written as [] so that
// a list command's output is always an array.
func writeJSON(w io.Writer, v any) error {
	if rv := reflect.ValueOf(v); rv.Kind() == reflect.Slice && rv.IsNil() {
		v = []struct{}{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table writes aligned columns under upper-case headers.
type table struct {
	tw *tabwriter.Writer
}

func newTable(w io.Writer, headers ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)}
	for i, h := range headers {
		headers[i] = strings.ToUpper(h)
	}
	t.row(headers...)
	return t
}

func (t *table) row(cells ...string) {
	for i, c := range cells {
		// A tab or newline in a cell would break the columns.
		cells[i] = strings.Map(func(r rune) rune {
			if unicode.IsControl(r) {
				return ' '
			}
			return r
		}, c)
		if cells[i] == "" {
			cells[i] = "-"
		}
	}
	fmt.Fprintln(t.tw, strings.Join(cells, "\t"))
}

func (t *table) flush() error { return t.tw.Flush() }

// formatBytes is a size for people: 0 B, 512 B, 1.5 KiB, 12 MiB, 3.2 GiB.
func formatBytes(n int64) string { return bytesize.Format(n) }

// formatMiB is formatBytes of a size in MiB.
func formatMiB(mib int64) string {
	if mib <= 0 {
		return ""
	}
	if mib > math.MaxInt64>>20 {
		return strconv.FormatInt(mib, 10) + " MiB"
	}
	return formatBytes(mib << 20)
}

// parseSize reads a size such as 256MiB, 1GB, 512k or 1000 (bytes), as
// `dstack server` reads its sizes (package bytesize).
func parseSize(s string) (int64, error) { return bytesize.Parse(s) }

// formatAgo is how long ago t was: "just now", "45 sec ago", "2 min ago",
// "3 hours ago", "5 days ago", then the date.
func formatAgo(now, t time.Time) string {
	if t.IsZero() {
		return ""
	}
	d := now.Sub(t)
	switch {
	case d < 5*time.Second:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%d sec ago", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%d min ago", int(d/time.Minute))
	case d < 2*time.Hour:
		return "1 hour ago"
	case d < 24*time.Hour:
		return fmt.Sprintf("%d hours ago", int(d/time.Hour))
	case d < 48*time.Hour:
		return "yesterday"
	case d < 7*24*time.Hour:
		return fmt.Sprintf("%d days ago", int(d/(24*time.Hour)))
	}
	return t.Local().Format("2006-01-02")
}

// formatDuration is a short duration: 45s, 3m12s, 2h05m, 3d04h.
func formatDuration(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	s := int64(d / time.Second)
	switch {
	case s < 60:
		return fmt.Sprintf("%ds", s)
	case s < 3600:
		return fmt.Sprintf("%dm%02ds", s/60, s%60)
	case s < 86400:
		return fmt.Sprintf("%dh%02dm", s/3600, s%3600/60)
	}
	return fmt.Sprintf("%dd%02dh", s/86400, s%86400/3600)
}

// parseSince reads --since: a duration back from now (10m, 1h30m, 7d,
// 1d12h) or a time (RFC 3339, or a date).
func parseSince(now time.Time, s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	if d, err := parseDays(s); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("--since %q: give a positive duration such as 10m", s)
		}
		return now.Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02 15:04:05", "2006-01-02"} {
		loc := time.Local
		if t, err := time.ParseInLocation(layout, s, loc); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("--since %q: give a duration such as 10m, 1h30m or 7d, or a time such as 2024-05-01T10:00:00Z", s)
}

// maxDays bounds the days of a duration: a time.Duration holds about
// 106,000 days.
const maxDays = 100_000

// parseDays is time.ParseDuration with days too: "7d", "1d12h", "-2d".
// A day is 24 hours.
func parseDays(s string) (time.Duration, error) {
	sign, rest := time.Duration(1), s
	if r, ok := strings.CutPrefix(rest, "-"); ok {
		sign, rest = -1, r
	} else if r, ok := strings.CutPrefix(rest, "+"); ok {
		rest = r
	}
	i := 0
	for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' {
		i++
	}
	if i == 0 || i >= len(rest) || rest[i] != 'd' {
		return time.ParseDuration(s)
	}
	days, err := strconv.Atoi(rest[:i])
	if err != nil || days > maxDays {
		return 0, fmt.Errorf("%q: at most %d days", s, maxDays)
	}
	d := time.Duration(days) * 24 * time.Hour
	if more := rest[i+1:]; more != "" {
		m, err := time.ParseDuration(more)
		if err != nil || m < 0 || strings.HasPrefix(more, "+") {
			return 0, fmt.Errorf("%q is not a duration", s)
		}
		if m > time.Duration(math.MaxInt64)-d {
			return 0, fmt.Errorf("%q is too long", s)
		}
		d += m
	}
	return sign * d, nil
}
