package cli

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
)

func TestFormatBytes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		n    int64
		want string
	}{
		{0, "0 B"}, {512, "512 B"}, {1024, "1 KiB"}, {1536, "1.5 KiB"}, {10 << 20, "10 MiB"},
		{3<<30 + 1<<29, "3.5 GiB"}, {1 << 40, "1 TiB"}, {1 << 62, "4 EiB"},
	}
	for _, tt := range tests {
		if got := formatBytes(tt.n); got != tt.want {
			t.Errorf("formatBytes(%d) = %q, want %q", tt.n, got, tt.want)
		}
	}
}

func TestParseSize(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{in: "1000", want: 1000}, {in: "256MiB", want: 256 << 20}, {in: "256M", want: 256 << 20},
		{in: "1GB", want: 1e9}, {in: "1.5k", want: 1536}, {in: " 2 gib ", want: 2 << 30},
		{in: "", wantErr: true}, {in: "MB", wantErr: true}, {in: "1XB", wantErr: true},
		{in: "1..2", wantErr: true}, {in: "99999999999TB", wantErr: true},
	}
	for _, tt := range tests {
		got, err := parseSize(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"1", "256MiB", "1.5GB", "k", ".5t", "1e9"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseSize(s)
		if err == nil && n < 0 {
			t.Fatalf("parseSize(%q) = %d", s, n)
		}
	})
}

func TestParseSince(t *testing.T) {
	t.Parallel()
	now := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in      string
		want    time.Time
		wantErr bool
	}{
		{in: "10m", want: now.Add(-10 * time.Minute)},
		{in: "1h30m", want: now.Add(-90 * time.Minute)},
		{in: "7d", want: now.Add(-7 * 24 * time.Hour)},
		{in: " 1d12h ", want: now.Add(-36 * time.Hour)},
		{in: "0d", want: now},
		{in: "-2d", wantErr: true},
		{in: "d", wantErr: true},
		{in: "1d-1h", wantErr: true},
		{in: "1dx", wantErr: true},
		{in: "999999999d", wantErr: true},
		{in: "2024-05-01T10:00:00Z", want: time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)},
		{in: "2024-05-01T10:00:00+02:00", want: time.Date(2024, 5, 1, 8, 0, 0, 0, time.UTC)},
		{in: "-5m", wantErr: true},
		{in: "yesterday", wantErr: true},
		{in: "", wantErr: true},
	}
	for _, tt := range tests {
		got, err := parseSince(now, tt.in)
		if (err != nil) != tt.wantErr || !got.Equal(tt.want) {
			t.Errorf("parseSince(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
		if err != nil && !strings.Contains(err.Error(), "--since") {
			t.Errorf("parseSince(%q) error %q does not name the flag", tt.in, err)
		}
	}
	// A date alone is midnight, local time.
	got, err := parseSince(now, "2024-04-30")
	if err != nil || !got.Equal(time.Date(2024, 4, 30, 0, 0, 0, 0, time.Local)) {
		t.Errorf("parseSince(date) = %v, %v", got, err)
	}
}

func FuzzParseSince(f *testing.F) {
	for _, s := range []string{"10m", "2024-05-01T10:00:00Z", "2024-05-01", "1h", "-1s", "x", "7d", "1d12h", "-3d", "99999d2562047h"} {
		f.Add(s)
	}
	now := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, s string) {
		got, err := parseSince(now, s)
		if err == nil && got.IsZero() {
			t.Fatalf("parseSince(%q) accepted a zero time", s)
		}
		if err == nil && got.After(now) && strings.TrimSpace(s) != "" {
			if _, derr := parseDays(strings.TrimSpace(s)); derr == nil {
				t.Fatalf("duration %q is in the future: %v", s, got)
			}
		}
	})
}

func TestFormatAgo(t *testing.T) {
	t.Parallel()
	now := time.Date(2024, 5, 10, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		ago  time.Duration
		want string
	}{
		{time.Second, "just now"}, {30 * time.Second, "30 sec ago"}, {2 * time.Minute, "2 min ago"},
		{90 * time.Minute, "1 hour ago"}, {5 * time.Hour, "5 hours ago"}, {30 * time.Hour, "yesterday"},
		{3 * 24 * time.Hour, "3 days ago"},
	}
	for _, tt := range tests {
		if got := formatAgo(now, now.Add(-tt.ago)); got != tt.want {
			t.Errorf("formatAgo(%v) = %q, want %q", tt.ago, got, tt.want)
		}
	}
	old := now.Add(-30 * 24 * time.Hour)
	if got := formatAgo(now, old); got != old.Local().Format("2006-01-02") {
		t.Errorf("formatAgo(a month) = %q", got)
	}
}

func TestFormatDuration(t *testing.T) {
	t.Parallel()
	tests := []struct {
		d    time.Duration
		want string
	}{
		{-time.Second, "0s"}, {45 * time.Second, "45s"}, {192 * time.Second, "3m12s"},
		{2*time.Hour + 5*time.Minute, "2h05m"}, {76 * time.Hour, "3d04h"},
	}
	for _, tt := range tests {
		if got := formatDuration(tt.d); got != tt.want {
			t.Errorf("formatDuration(%v) = %q, want %q", tt.d, got, tt.want)
		}
	}
}

func TestTableAligns(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	tb := newTable(&b, "name", "status")
	tb.row("a-long-name", "online")
	tb.row("b", "")
	tb.row("tab\there", "x")
	if err := tb.flush(); err != nil {
		t.Fatal(err)
	}
	want := "NAME         STATUS\na-long-name  online\nb            -\ntab here     x\n"
	if b.String() != want {
		t.Fatalf("got\n%s\nwant\n%s", b.String(), want)
	}
}

func TestWriteJSONNilIsArray(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	var runs []api.Run
	if err := writeJSON(&b, runs); err != nil {
		t.Fatal(err)
	}
	var out []api.Run
	if err := json.Unmarshal(b.Bytes(), &out); err != nil || out == nil {
		t.Fatalf("%q: %v", b.String(), err)
	}
}

func TestFormatGPUs(t *testing.T) {
	t.Parallel()
	got := formatGPUs([]api.GPU{{Name: "A100", MemoryMiB: 40 << 10}, {Name: "A100", MemoryMiB: 40 << 10}, {Name: "T4", MemoryMiB: 16 << 10}})
	if want := "2xA100 (40 GiB), 1xT4 (16 GiB)"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	if got := formatGPUs(nil); got != "" {
		t.Fatalf("no GPUs: %q", got)
	}
}

func TestRunFailure(t *testing.T) {
	t.Parallel()
	three, zero, big := 3, 0, 300
	tests := []struct {
		name     string
		run      api.Run
		wantCode int
		wantWhy  string
	}{
		{"exit code", api.Run{Status: api.StatusFailed, Jobs: []api.Job{
			{Workflow: "prepare", Status: api.StatusDone, ExitCode: &zero},
			{Workflow: "train", Status: api.StatusFailed, ExitCode: &three},
		}}, 3, "train exited with code 3"},
		{"out of range code", api.Run{Status: api.StatusFailed, Jobs: []api.Job{
			{Workflow: "train", Status: api.StatusFailed, ExitCode: &big},
		}}, 1, "code 300"},
		{"no code", api.Run{Status: api.StatusFailed, Jobs: []api.Job{
			{Workflow: "train", Status: api.StatusFailed, StatusReason: "image not found"},
		}}, 1, "train failed (image not found)"},
		{"stopped", api.Run{Status: api.StatusStopped, Jobs: []api.Job{
			{Workflow: "train", Status: api.StatusStopped},
		}}, 1, "train was stopped"},
	}
	for _, tt := range tests {
		code, why := runFailure(&tt.run)
		if code != tt.wantCode || !strings.Contains(why, tt.wantWhy) {
			t.Errorf("%s: got %d %q, want %d %q", tt.name, code, why, tt.wantCode, tt.wantWhy)
		}
	}
}
