package servercmd

import (
	"strings"
	"testing"
)

func TestParseMinFreeSpace(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    int64
		wantErr string
	}{
		{"", 0, ""}, // the server's default
		{"0", -1, ""},
		{"2GiB", 2 << 30, ""},
		{"500MB", 500e6, ""},
		{"lots", 0, "--min-free-space"},
		{"-1GB", 0, "--min-free-space"},
	}
	for _, tt := range tests {
		got, err := parseMinFreeSpace(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("parseMinFreeSpace(%q) = %d, %v; want an error naming %s", tt.in, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("parseMinFreeSpace(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
}

func TestMinFreeSpaceHelpStatesTheDefault(t *testing.T) {
	t.Parallel()
	f := Command(nil).Flags().Lookup("min-free-space")
	if f == nil || !strings.Contains(f.Usage, "1 GiB or 5 % of the file system, whichever is smaller") {
		t.Fatalf("--min-free-space usage: %+v", f)
	}
}
