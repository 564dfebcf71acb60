package codearchive_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/dstackai/dstack/codearchive"
	"github.com/dstackai/dstack/codearchive/pack"
	"github.com/dstackai/dstack/jobdir"
)

// tree writes files into a fresh directory: a name ending in '/' is a
// directory, a value starting with "->" a symbolic link.
func tree(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for _, name := range slices.Sorted(maps.Keys(files)) {
		content := files[name]
		full := filepath.Join(dir, filepath.FromSlash(name))
		if strings.HasSuffix(name, "/") {
			if err := os.MkdirAll(full, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if target, ok := strings.CutPrefix(content, "->"); ok {
			if err := os.Symlink(target, full); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// entries lists the names of a packed archive, in order.
func entries(t *testing.T, archive []byte) []string {
	t.Helper()
	gz, err := gzip.NewReader(bytes.NewReader(archive))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return names
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
	}
}

func packDir(t *testing.T, dir string) ([]byte, pack.Stats) {
	t.Helper()
	var buf bytes.Buffer
	st, err := pack.Dir(context.Background(), dir, &buf, pack.Options{})
	if err != nil {
		t.Fatalf("pack.Dir: %v", err)
	}
	return buf.Bytes(), st
}

func TestPackIgnores(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		files map[string]string
		want  []string
	}{
		{
			name: "git is always left out",
			files: map[string]string{
				".git/HEAD":     "ref",
				"sub/.git":      "gitdir: ../.git/modules/sub",
				"sub/a.txt":     "a",
				"main.py":       "print()",
				".github/x.yml": "x",
			},
			want: []string{".github/", ".github/x.yml", "main.py", "sub/", "sub/a.txt"},
		},
		{
			name: "root gitignore, negation, dir-only and anchored",
			files: map[string]string{
				".gitignore":      "*.log\n!keep.log\nbuild/\n/top.txt\n# comment\n\n",
				"a.log":           "x",
				"keep.log":        "x",
				"sub/b.log":       "x",
				"sub/keep.log":    "x",
				"build/out":       "x",
				"sub/build/out":   "x",
				"notadir/build":   "a file named build is kept",
				"top.txt":         "x",
				"sub/top.txt":     "anchored patterns only match at the root",
				"src/main.go":     "package main",
				"data/big.bin":    "x",
				"data/small.json": "x",
			},
			want: []string{
				".gitignore", "data/", "data/big.bin", "data/small.json", "keep.log",
				"notadir/", "notadir/build", "src/", "src/main.go",
				"sub/", "sub/keep.log", "sub/top.txt",
			},
		},
		{
			name: "nested gitignore applies below its directory only",
			files: map[string]string{
				"a/.gitignore":  "*.tmp\n/only-here\n",
				"a/x.tmp":       "x",
				"a/b/y.tmp":     "x",
				"a/only-here":   "x",
				"a/b/only-here": "x",
				"z.tmp":         "kept: outside a/",
			},
			want: []string{"a/", "a/.gitignore", "a/b/", "a/b/only-here", "z.tmp"},
		},
		{
			name: "nested gitignore re-includes what the root ignores",
			files: map[string]string{
				".gitignore":      "*.csv\n",
				"data/.gitignore": "!wanted.csv\n",
				"data/wanted.csv": "x",
				"data/other.csv":  "x",
				"other.csv":       "x",
			},
			want: []string{".gitignore", "data/", "data/.gitignore", "data/wanted.csv"},
		},
		{
			name: "nothing inside an ignored directory comes back",
			files: map[string]string{
				".gitignore":    "logs/\n!logs/keep.txt\n",
				"logs/keep.txt": "x",
				"main.py":       "x",
			},
			want: []string{".gitignore", "main.py"},
		},
		{
			name: "dstackignore adds to and overrides gitignore",
			files: map[string]string{
				".gitignore":        "*.pt\n",
				".dstackignore":     "data/\n!model.pt\n",
				"data/x":            "x",
				"model.pt":          "x",
				"other.pt":          "x",
				"sub/.dstackignore": "*.md\n",
				"sub/README.md":     "x",
				"README.md":         "x",
			},
			want: []string{".dstackignore", ".gitignore", "README.md", "model.pt", "sub/", "sub/.dstackignore"},
		},
		{
			name: "doublestar and crlf",
			files: map[string]string{
				".gitignore":            "**/__pycache__\r\nvenv\r\n",
				"a/b/__pycache__/x.pyc": "x",
				"__pycache__/y.pyc":     "x",
				"venv/bin/python":       "x",
				"a/b/c.py":              "x",
			},
			want: []string{".gitignore", "a/", "a/b/", "a/b/c.py"},
		},
		{
			name: "symlinks are kept as links and matched as files",
			files: map[string]string{
				".gitignore":   "ignored-link\nlinked-dir/\n",
				"target.txt":   "x",
				"link":         "->target.txt",
				"abs":          "->/etc/passwd",
				"ignored-link": "->target.txt",
				"real/f":       "x",
				"linked-dir":   "->real",
			},
			want: []string{".gitignore", "abs", "link", "linked-dir", "real/", "real/f", "target.txt"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := tree(t, tt.files)
			archive, _ := packDir(t, dir)
			if got := entries(t, archive); !slices.Equal(got, tt.want) {
				t.Errorf("entries:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	dir := tree(t, map[string]string{
		"run.sh":           "#!/bin/sh\necho hi\n",
		"data/numbers.txt": "1\n2\n3\n",
		"data/empty":       "",
		"deep/a/b/c/d.txt": strings.Repeat("x", 100000),
		"link":             "->data/numbers.txt",
		"up-and-in":        "->deep/a/../../data",
		"empty-dir/":       "",
		"ro/file":          "read-only dir",
		strings.Repeat("n", 150) + "/" + strings.Repeat("m", 120): "long names",
	})
	mustChmod(t, filepath.Join(dir, "run.sh"), 0o755)
	mustChmod(t, filepath.Join(dir, "data/empty"), 0o600)
	mustChmod(t, filepath.Join(dir, "ro"), 0o555)
	t.Cleanup(func() { _ = os.Chmod(filepath.Join(dir, "ro"), 0o755) })

	archive, st := packDir(t, dir)
	if st.Files != 8 || st.Bytes != int64(len("#!/bin/sh\necho hi\n")+6+100000+len("read-only dir")+len("long names")) {
		t.Errorf("stats = %+v", st)
	}
	again, _ := packDir(t, dir)
	if !bytes.Equal(archive, again) {
		t.Error("packing the same tree twice gave different bytes")
	}

	out := filepath.Join(t.TempDir(), "out")
	if err := codearchive.Unpack(bytes.NewReader(archive), out, codearchive.UnpackOptions{}); err != nil {
		t.Fatalf("Unpack: %v", err)
	}
	t.Cleanup(func() { _ = os.Chmod(filepath.Join(out, "ro"), 0o755) })
	want := snapshot(t, dir)
	// Unpacked directories are always usable by their owner (see Unpack).
	want[slices.Index(want, "ro dr-xr-xr-x")] = "ro drwxr-xr-x"
	if got := snapshot(t, out); !slices.Equal(got, want) {
		t.Errorf("unpacked tree differs:\n got %q\nwant %q", got, want)
	}
}

func mustChmod(t *testing.T, name string, mode fs.FileMode) {
	t.Helper()
	if err := os.Chmod(name, mode); err != nil {
		t.Fatal(err)
	}
}

// snapshot describes a tree: each entry's name, mode and content or target.
func snapshot(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		info, err := d.Info()
		if err != nil {
			return err
		}
		line := rel + " " + info.Mode().String()
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			line += " -> " + target
		case info.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			line += " " + string(b[:min(len(b), 40)])
		}
		out = append(out, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestPackSizeLimit(t *testing.T) {
	t.Parallel()
	dir := tree(t, map[string]string{"a": strings.Repeat("a", 600), "b": strings.Repeat("b", 600)})
	var buf bytes.Buffer
	_, err := pack.Dir(context.Background(), dir, &buf, pack.Options{MaxSize: 1000})
	if !errors.Is(err, codearchive.ErrTooLarge) {
		t.Fatalf("pack.Dir = %v, want ErrTooLarge", err)
	}
	var tl *codearchive.TooLargeError
	if !errors.As(err, &tl) || tl.Size != 1200 || tl.Limit != 1000 {
		t.Errorf("error = %#v", err)
	}
	if !strings.Contains(err.Error(), ".dstackignore") {
		t.Errorf("error does not hint at .dstackignore: %v", err)
	}
	if _, err := pack.Dir(context.Background(), dir, io.Discard, pack.Options{MaxSize: 1200}); err != nil {
		t.Errorf("Pack at the limit: %v", err)
	}
}

func TestPackErrors(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	dir := tree(t, map[string]string{"a": "a"})
	if _, err := pack.Dir(ctx, dir, io.Discard, pack.Options{}); !errors.Is(err, context.Canceled) {
		t.Errorf("Pack with a cancelled context = %v", err)
	}
	if _, err := pack.Dir(context.Background(), filepath.Join(dir, "a"), io.Discard, pack.Options{}); err == nil {
		t.Error("Pack of a file succeeded")
	}
	if _, err := pack.Dir(context.Background(), filepath.Join(dir, "missing"), io.Discard, pack.Options{}); err == nil {
		t.Error("Pack of a missing directory succeeded")
	}
}

// entry is one entry of a hand-made archive.
type entry struct {
	name     string
	typ      byte
	body     string
	linkname string
	mode     int64
}

func craft(t testing.TB, es ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, e := range es {
		mode := e.mode
		if mode == 0 {
			mode = 0o644
		}
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: mode, Linkname: e.linkname, Size: int64(len(e.body))}
		if e.typ != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, e.body); err != nil && e.typ == tar.TypeReg {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestUnpackRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		entries []entry
		opts    codearchive.UnpackOptions
		want    error // matched with errors.Is; nil means any error
	}{
		{name: "absolute", entries: []entry{{name: "/tmp/evil", typ: tar.TypeReg, body: "x"}}, want: codearchive.ErrUnsafePath},
		{name: "dot dot", entries: []entry{{name: "../evil", typ: tar.TypeReg, body: "x"}}, want: codearchive.ErrUnsafePath},
		{name: "dot dot inside", entries: []entry{{name: "a/../../evil", typ: tar.TypeReg, body: "x"}}, want: codearchive.ErrUnsafePath},
		{name: "backslash dot dot", entries: []entry{{name: `a\..\..\evil`, typ: tar.TypeReg, body: "x"}}, want: codearchive.ErrUnsafePath},
		{name: "dot dot directory", entries: []entry{{name: "../evil/", typ: tar.TypeDir}}, want: codearchive.ErrUnsafePath},
		{
			name: "write through an escaping link",
			entries: []entry{
				{name: "link", typ: tar.TypeSymlink, linkname: ".."},
				{name: "link/evil", typ: tar.TypeReg, body: "x"},
			},
			want: codearchive.ErrUnsafePath,
		},
		{
			name: "write through an absolute link",
			entries: []entry{
				{name: "link", typ: tar.TypeSymlink, linkname: "/tmp"},
				{name: "link/evil", typ: tar.TypeReg, body: "x"},
			},
			want: codearchive.ErrUnsafePath,
		},
		{
			name: "write through an inside link",
			entries: []entry{
				{name: "real/", typ: tar.TypeDir},
				{name: "link", typ: tar.TypeSymlink, linkname: "real"},
				{name: "link/f", typ: tar.TypeReg, body: "x"},
			},
			want: codearchive.ErrUnsafePath,
		},
		{
			name: "directory through a link",
			entries: []entry{
				{name: "link", typ: tar.TypeSymlink, linkname: ".."},
				{name: "link/d/", typ: tar.TypeDir},
			},
			want: codearchive.ErrUnsafePath,
		},
		{
			name: "link over a directory",
			entries: []entry{
				{name: "d/", typ: tar.TypeDir},
				{name: "d", typ: tar.TypeSymlink, linkname: ".."},
			},
			want: codearchive.ErrUnsafePath,
		},
		{
			name: "file under a file",
			entries: []entry{
				{name: "f", typ: tar.TypeReg, body: "x"},
				{name: "f/g", typ: tar.TypeReg, body: "x"},
			},
			want: codearchive.ErrUnsafePath,
		},
		{name: "link out", entries: []entry{{name: "up", typ: tar.TypeSymlink, linkname: "../../.."}}, want: jobdir.ErrOutside},
		{name: "absolute link", entries: []entry{{name: "a/etc", typ: tar.TypeSymlink, linkname: "/etc"}}, want: jobdir.ErrOutside},
		{name: "absolute link to a file", entries: []entry{{name: "data", typ: tar.TypeSymlink, linkname: "/some/host/dir"}}, want: codearchive.ErrUnsafePath},
		{name: "link to a link out", entries: []entry{{name: "a", typ: tar.TypeSymlink, linkname: "b"}, {name: "b", typ: tar.TypeSymlink, linkname: "../x"}}, want: jobdir.ErrOutside},
		{name: "link out through a later link", entries: []entry{{name: "m", typ: tar.TypeSymlink, linkname: "l/.."}, {name: "l", typ: tar.TypeSymlink, linkname: "."}}, want: jobdir.ErrOutside},
		{name: "hard link", entries: []entry{{name: "h", typ: tar.TypeLink, linkname: "/etc/passwd"}}},
		{name: "device", entries: []entry{{name: "dev", typ: tar.TypeChar}}},
		{name: "fifo", entries: []entry{{name: "fifo", typ: tar.TypeFifo}}},
		{
			name:    "too large",
			entries: []entry{{name: "a", typ: tar.TypeReg, body: "12345"}, {name: "b", typ: tar.TypeReg, body: "67890"}},
			opts:    codearchive.UnpackOptions{MaxSize: 8},
			want:    codearchive.ErrTooLarge,
		},
		{
			name:    "too many entries",
			entries: []entry{{name: "a/", typ: tar.TypeDir}, {name: "b/", typ: tar.TypeDir}, {name: "c/", typ: tar.TypeDir}},
			opts:    codearchive.UnpackOptions{MaxEntries: 2},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			base := t.TempDir()
			dir := filepath.Join(base, "dest", "code")
			err := codearchive.Unpack(bytes.NewReader(craft(t, tt.entries...)), dir, tt.opts)
			if err == nil {
				t.Fatal("Unpack succeeded")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("Unpack = %v, want %v", err, tt.want)
			}
			assertInside(t, base, "dest")
		})
	}
}

// assertInside fails when base holds anything but keep (and what is below it).
func assertInside(t *testing.T, base, keep string) {
	t.Helper()
	des, err := os.ReadDir(base)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range des {
		if d.Name() != keep {
			t.Errorf("Unpack wrote %s outside its directory", filepath.Join(base, d.Name()))
		}
	}
	if _, err := os.Lstat(filepath.Join(base, "evil")); err == nil {
		t.Error("evil was written outside the directory")
	}
}

func TestUnpackAccepts(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	archive := craft(t,
		entry{name: "./", typ: tar.TypeDir},
		entry{name: "./a/b.txt", typ: tar.TypeReg, body: "first", mode: 0o4755},
		entry{name: "a//b.txt", typ: tar.TypeReg, body: "second wins"},
		entry{name: "link", typ: tar.TypeSymlink, linkname: "/etc/passwd"},
		entry{name: "link", typ: tar.TypeReg, body: "a file replaces the link, the target is untouched"},
		entry{name: "in", typ: tar.TypeSymlink, linkname: "a/../x"},
		entry{name: "x", typ: tar.TypeReg, body: "x"},
		entry{name: "x", typ: tar.TypeSymlink, linkname: "a/b.txt"},
	)
	if err := codearchive.Unpack(bytes.NewReader(archive), dir, codearchive.UnpackOptions{MaxSize: 1000}); err != nil {
		t.Fatalf("Unpack: %v", err)
	}
	got := snapshot(t, dir)[1:] // without dir itself
	want := []string{
		"a drwxr-xr-x",
		"a/b.txt -rw-r--r-- second wins",
		"in Lrwxrwxrwx -> a/../x",
		"link -rw-r--r-- a file replaces the link, the target is ",
		"x Lrwxrwxrwx -> a/b.txt",
	}
	if !slices.Equal(got, want) {
		t.Errorf("tree:\n got %q\nwant %q", got, want)
	}
}

func TestUnpackBadInput(t *testing.T) {
	t.Parallel()
	for name, data := range map[string][]byte{
		"not gzip":  []byte("hello"),
		"truncated": craft(t, entry{name: "a", typ: tar.TypeReg, body: strings.Repeat("x", 10000)})[:40],
	} {
		if err := codearchive.Unpack(bytes.NewReader(data), t.TempDir(), codearchive.UnpackOptions{}); err == nil {
			t.Errorf("%s: Unpack succeeded", name)
		}
	}
}
