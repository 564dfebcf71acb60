package servercmd

import (
	"strings"
	"testing"
	"time"
)

func TestParseDays(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		in   string
		want time.Duration
	}{
		{"30d", 30 * 24 * time.Hour}, {"1d12h", 36 * time.Hour}, {"12h", 12 * time.Hour}, {"90m", 90 * time.Minute},
		{"0", 0}, {"", 0}, {" 7d ", 7 * 24 * time.Hour}, {"0d", 0},
	} {
		if got, err := parseDays(tt.in); err != nil || got != tt.want {
			t.Errorf("parseDays(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"d", "30", "-1d", "1.5d", "30days", "x", "-5m", "1d-1h", "99999d"} {
		if _, err := parseDays(bad); err == nil || !strings.Contains(err.Error(), "such as 30d") {
			t.Errorf("parseDays(%q) = %v, want an error that gives an example", bad, err)
		}
	}
	var d time.Duration
	v := daysValue{&d}
	if err := v.Set("30d"); err != nil || v.String() != "30d" {
		t.Errorf("daysValue 30d: %v, shown as %s", err, v.String())
	}
	if err := v.Set("0"); err != nil || v.String() != "0" {
		t.Errorf("daysValue 0: %v, shown as %s", err, v.String())
	}
}

func FuzzParseDays(f *testing.F) {
	for _, s := range []string{"30d", "1d12h", "0", "", "d", "-1d", "90m"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := parseDays(s)
		if err == nil && d < 0 {
			t.Fatalf("parseDays(%q) = %v: negative", s, d)
		}
	})
}

func TestQuotaValue(t *testing.T) {
	t.Parallel()
	var n int64
	v := quotaValue{&n}
	for _, tt := range []struct {
		in   string
		want int64
		show string
	}{{"50GiB", 50 << 30, "50GiB"}, {"0", 0, "0"}, {"1000", 1000, "1000"}} {
		if err := v.Set(tt.in); err != nil || n != tt.want || v.String() != tt.show {
			t.Errorf("Set(%q): %d (%s), %v; want %d (%s)", tt.in, n, v.String(), err, tt.want, tt.show)
		}
	}
	for _, bad := range []string{"-1", "lots", "5XB"} {
		if err := v.Set(bad); err == nil {
			t.Errorf("Set(%q) accepted", bad)
		}
	}
}
