package codearchive_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"os"
	"path/filepath"
	"testing"

	"github.com/dstackai/dstack/codearchive"
)

// FuzzUnpack feeds Unpack arbitrary bytes (gzip'd first unless they already
// are, so that the fuzzer reaches the tar entries) and checks that it never
// panics and never touches anything outside its directory.
func FuzzUnpack(f *testing.F) {
	seeds := [][]entry{
		{{name: "a/b.txt", typ: tar.TypeReg, body: "x"}, {name: "l", typ: tar.TypeSymlink, linkname: "a"}},
		{{name: "../sentinel", typ: tar.TypeReg, body: "x"}},
		{{name: "/tmp/x", typ: tar.TypeReg, body: "x"}},
		{{name: "l", typ: tar.TypeSymlink, linkname: ".."}, {name: "l/sentinel", typ: tar.TypeReg, body: "x"}},
		{{name: "l", typ: tar.TypeSymlink, linkname: "../sentinel"}, {name: "l", typ: tar.TypeReg, body: "x"}},
		{{name: "d/", typ: tar.TypeDir, mode: 0o500}, {name: "d/f", typ: tar.TypeReg, body: "x", mode: 0o4777}},
		{{name: "h", typ: tar.TypeLink, linkname: "../sentinel"}},
	}
	for _, s := range seeds {
		gz := craft(f, s...)
		f.Add(gz)
		raw, err := gunzip(gz)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
	}
	f.Add([]byte{})
	f.Add([]byte{0x1f, 0x8b})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 2 || data[0] != 0x1f || data[1] != 0x8b {
			var buf bytes.Buffer
			gz := gzip.NewWriter(&buf)
			if _, err := gz.Write(data); err != nil {
				t.Fatal(err)
			}
			if err := gz.Close(); err != nil {
				t.Fatal(err)
			}
			data = buf.Bytes()
		}
		base := t.TempDir()
		sentinel := filepath.Join(base, "sentinel")
		if err := os.WriteFile(sentinel, []byte("keep"), 0o644); err != nil {
			t.Fatal(err)
		}
		dest := filepath.Join(base, "dest")
		_ = codearchive.Unpack(bytes.NewReader(data), dest, codearchive.UnpackOptions{MaxSize: 1 << 20, MaxEntries: 1000})
		// Let the test clean up whatever modes the archive set.
		if err := filepath.WalkDir(dest, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				return os.Chmod(p, 0o755)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		des, err := os.ReadDir(base)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range des {
			if d.Name() != "sentinel" && d.Name() != "dest" {
				t.Fatalf("Unpack wrote %s outside its directory", d.Name())
			}
		}
		fi, err := os.Lstat(sentinel)
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o644 {
			t.Fatalf("the file beside the directory changed: %v %v", fi, err)
		}
		if b, err := os.ReadFile(sentinel); err != nil || string(b) != "keep" {
			t.Fatalf("the file beside the directory changed: %q %v", b, err)
		}
	})
}

func gunzip(b []byte) ([]byte, error) {
	gz, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if _, err := out.ReadFrom(gz); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}
