package bytesize

import "testing"

func TestParse(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{in: "1000", want: 1000}, {in: "256MiB", want: 256 << 20}, {in: "256M", want: 256 << 20},
		{in: "1GB", want: 1e9}, {in: "1.5k", want: 1536}, {in: " 2 gib ", want: 2 << 30}, {in: "0", want: 0},
		{in: "", wantErr: true}, {in: "MB", wantErr: true}, {in: "1XB", wantErr: true},
		{in: "1..2", wantErr: true}, {in: "99999999999TB", wantErr: true}, {in: "-1", wantErr: true},
	}
	for _, tt := range tests {
		got, err := Parse(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("Parse(%q) = %d, %v; want %d, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestFormat(t *testing.T) {
	t.Parallel()
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1536: "1.5 KiB", 256 << 20: "256 MiB", 1 << 30: "1 GiB"} {
		if got := Format(n); got != want {
			t.Errorf("Format(%d) = %q, want %q", n, got, want)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"1", "256MiB", "1.5GB", "k", ".5t", "1e9", "0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := Parse(s)
		if err == nil && n < 0 {
			t.Fatalf("Parse(%q) = %d", s, n)
		}
	})
}
