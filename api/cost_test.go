package api

import (
	"testing"
	"time"
)

func TestParsePeriod(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]time.Duration{"30d": 30 * 24 * time.Hour, "12h": 12 * time.Hour, " 90m ": 90 * time.Minute} {
		if got, err := ParsePeriod(in); err != nil || got != want {
			t.Errorf("ParsePeriod(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "d", "0d", "-1d", "+1d", "401d", "1y", "-5m", "9999999999999d"} {
		if _, err := ParsePeriod(in); err == nil {
			t.Errorf("ParsePeriod(%q) took it", in)
		}
	}
}

func TestParseMonthly(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]float64{"500": 500, "99.50": 99.5, "0": 0} {
		if got, err := ParseMonthly(in); err != nil || got != want {
			t.Errorf("ParseMonthly(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1", "NaN", "Inf", "1e13", "five"} {
		if _, err := ParseMonthly(in); err == nil {
			t.Errorf("ParseMonthly(%q) took it", in)
		}
	}
}

func FuzzParsePeriod(f *testing.F) {
	for _, s := range []string{"30d", "12h", "1h30m", "-1d", "400d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParsePeriod(s)
		if err == nil && (d <= 0 || d > MaxUsagePeriod) {
			t.Fatalf("ParsePeriod(%q) = %v, outside (0, %v]", s, d, MaxUsagePeriod)
		}
	})
}

func FuzzParseMonthly(f *testing.F) {
	for _, s := range []string{"500", "99.50", "0", "-1", "NaN"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseMonthly(s)
		if err == nil && !(v >= 0 && v <= 1e12) {
			t.Fatalf("ParseMonthly(%q) = %v", s, v)
		}
	})
}
