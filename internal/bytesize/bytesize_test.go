package bytesize

import "testing"

func TestParse(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{"65536", 65536, false},
		{"400MB", 400e6, false},
		{"400mb", 400e6, false},
		{"1GiB", 1 << 30, false},
		{"1.5g", 3 << 29, false},
		{"256MiB", 256 << 20, false},
		{" 2 KiB ", 2048, false},
		{"", 0, true},
		{"lots", 0, true},
		{"1PB", 0, true},
		{"-1", 0, true},
		{"1e30TB", 0, true},
	} {
		got, err := Parse(tt.in)
		if got != tt.want || (err != nil) != tt.wantErr {
			t.Errorf("Parse(%q) = %d, %v; want %d, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestExactRoundTrips(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		n    int64
		want string
	}{{256 << 20, "256MiB"}, {1 << 30, "1GiB"}, {65536, "64KiB"}, {65537, "65537"}, {400e6, "390625KiB"}, {3 << 40, "3TiB"}, {0, "0"}} {
		got := Exact(tt.n)
		if got != tt.want {
			t.Errorf("Exact(%d) = %q, want %q", tt.n, got, tt.want)
		}
		if back, err := Parse(got); err != nil || back != tt.n {
			t.Errorf("Parse(Exact(%d)) = %d, %v", tt.n, back, err)
		}
	}
}

func TestValue(t *testing.T) {
	t.Parallel()
	var n int64 = 256 << 20
	v := Value{P: &n}
	if v.String() != "256MiB" {
		t.Errorf("String = %q", v.String())
	}
	if err := v.Set("400MB"); err != nil || n != 400e6 {
		t.Errorf("Set(400MB): %d, %v", n, err)
	}
	for _, bad := range []string{"0", "x", "0MB"} {
		if err := v.Set(bad); err == nil {
			t.Errorf("Set(%q) accepted", bad)
		}
	}
}

// FuzzParse: Parse never panics, never returns a negative size, and what
// Exact writes it reads back.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"1", "400MB", "1.5GiB", "", "x", "9999999999999TB", "."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := Parse(s)
		if err != nil {
			return
		}
		if n < 0 {
			t.Fatalf("Parse(%q) = %d", s, n)
		}
		if back, err := Parse(Exact(n)); err != nil || back != n {
			t.Fatalf("Parse(Exact(%d)) = %d, %v", n, back, err)
		}
	})
}

func TestFormat(t *testing.T) {
	t.Parallel()
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1536: "1.5 KiB", 256 << 20: "256 MiB", 1 << 30: "1 GiB"} {
		if got := Format(n); got != want {
			t.Errorf("Format(%d) = %q, want %q", n, got, want)
		}
	}
}
