package privfs

import (
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func mode(t *testing.T, p string) fs.FileMode {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestDir(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		make    fs.FileMode // 0: not there
		wantWas fs.FileMode
	}{
		{"new", 0, 0},
		{"made by the user with the usual umask", 0o755, 0o755},
		{"open to all", 0o777, 0o777},
		{"group only", 0o750, 0o750},
		{"already private", 0o700, 0},
		{"owner lacks rights", 0o500, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := filepath.Join(t.TempDir(), "a", "data")
			if tt.make != 0 {
				if err := os.MkdirAll(p, 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(p, tt.make); err != nil {
					t.Fatal(err)
				}
			}
			was, err := Dir(p)
			if err != nil {
				t.Fatal(err)
			}
			if was != tt.wantWas {
				t.Errorf("was %v, want %v", was, tt.wantWas)
			}
			want := fs.FileMode(0o700)
			if tt.make == 0o500 {
				want = 0o500 // private already: left alone
			}
			if got := mode(t, p); got != want {
				t.Errorf("mode %v, want %v", got, want)
			}
			if tt.make == 0 {
				if got := mode(t, filepath.Dir(p)); got != 0o700 {
					t.Errorf("new parent's mode %v, want 0700", got)
				}
			}
		})
	}
}

func TestDirRefusesSharedDirectory(t *testing.T) {
	t.Parallel()
	p := t.TempDir()
	if err := os.Chmod(p, 0o777|fs.ModeSticky); err != nil {
		t.Fatal(err)
	}
	if _, err := Dir(p); err == nil {
		t.Fatal("Dir accepted a sticky, world-writable directory")
	}
	if fi, _ := os.Stat(p); fi.Mode()&fs.ModeSticky == 0 || fi.Mode().Perm() != 0o777 {
		t.Errorf("mode changed to %v", fi.Mode())
	}
}

func TestFile(t *testing.T) {
	t.Parallel()
	for _, m := range []fs.FileMode{0o644, 0o666, 0o640, 0o604, 0o700, 0o600, 0o400} {
		t.Run(m.String(), func(t *testing.T) {
			t.Parallel()
			p := filepath.Join(t.TempDir(), "f")
			if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, m); err != nil {
				t.Fatal(err)
			}
			if _, err := File(p); err != nil {
				t.Fatal(err)
			}
			want := fs.FileMode(0o600)
			if m&0o177 == 0 {
				want = m
			}
			if got := mode(t, p); got != want {
				t.Errorf("mode %v, want %v", got, want)
			}
		})
	}
	if was, err := File(filepath.Join(t.TempDir(), "missing")); err != nil || was != 0 {
		t.Errorf("missing file: %v, %v", was, err)
	}
}

func TestCreateFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := filepath.Join(dir, "db")
	if _, err := CreateFile(p); err != nil {
		t.Fatal(err)
	}
	if got := mode(t, p); got != 0o600 {
		t.Errorf("new file %v, want 0600", got)
	}
	if err := os.WriteFile(p, []byte("data"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
	if was, err := CreateFile(p); err != nil || was != 0o644 {
		t.Errorf("existing file: was %v, %v", was, err)
	}
	if b, _ := os.ReadFile(p); string(b) != "data" || mode(t, p) != 0o600 {
		t.Errorf("existing file: %q, %v", b, mode(t, p))
	}
}
