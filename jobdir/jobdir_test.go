package jobdir_test

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/dstackai/dstack/jobdir"
)

const secret = "SECRET of the host"

// setup makes base/outside (a directory with a secret file, standing for
// the host) and base/job, fills the job's directory with files (name ->
// content; a name ending in / is a directory, a content starting with "->"
// a symbolic link, "->@" an absolute one to the outside directory plus the
// rest) and opens it.
func setup(t *testing.T, files map[string]string) (d *jobdir.Dir, outside string) {
	t.Helper()
	base := t.TempDir()
	outside = filepath.Join(base, "outside")
	job := filepath.Join(base, "job")
	for _, dir := range []string{outside, job} {
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte(secret), 0o644); err != nil {
		t.Fatal(err)
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		full := filepath.Join(job, n)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		c := files[n]
		switch {
		case strings.HasSuffix(n, "/"):
			if err := os.MkdirAll(full, 0o755); err != nil {
				t.Fatal(err)
			}
		case strings.HasPrefix(c, "->@"):
			if err := os.Symlink(outside+c[3:], full); err != nil {
				t.Fatal(err)
			}
		case strings.HasPrefix(c, "->"):
			if err := os.Symlink(c[2:], full); err != nil {
				t.Fatal(err)
			}
		default:
			if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	d, err := jobdir.Open(job)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d, outside
}

// read reads a file through d.
func read(t *testing.T, d *jobdir.Dir, name string) string {
	t.Helper()
	f, err := d.Open(name)
	if err != nil {
		t.Fatalf("Open(%q): %v", name, err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// wantEscape checks that err refuses a path for the link it names.
func wantEscape(t *testing.T, err error, link string) {
	t.Helper()
	var esc *jobdir.EscapeError
	if !errors.As(err, &esc) || !errors.Is(err, jobdir.ErrOutside) {
		t.Fatalf("error %v, want an EscapeError", err)
	}
	if esc.Link != link {
		t.Errorf("error %q names the link %q, want %q", err, esc.Link, link)
	}
	if link != "" && !strings.Contains(err.Error(), `"`+link+`"`) {
		t.Errorf("error %q does not name %q", err, link)
	}
}

// TestFiles: listing and reading a job's artifacts with symbolic links at
// every position. What leads out is refused or left out with its reason;
// what stays inside is read; nothing of the outside is ever read.
func TestFiles(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		files       map[string]string
		artifact    string
		want        map[string]string // file -> content
		wantSkipped []string          // names, with a word of the reason
		wantLink    string            // the link an EscapeError names; "-" for none
	}{
		{name: "plain tree", files: map[string]string{"model/w.bin": "w", "model/sub/c.json": "c"}, artifact: "model",
			want: map[string]string{"model/w.bin": "w", "model/sub/c.json": "c"}},
		{name: "artifact root is a relative link out", files: map[string]string{"out": "->../outside"}, artifact: "out", wantLink: "out"},
		{name: "artifact root is an absolute link out", files: map[string]string{"out": "->@"}, artifact: "out", wantLink: "out"},
		{name: "artifact root is an absolute link to a file out", files: map[string]string{"out": "->@/secret"}, artifact: "out", wantLink: "out"},
		{name: "intermediate directory is a link out", files: map[string]string{"lnk": "->../outside"}, artifact: "lnk/secret", wantLink: "lnk"},
		{name: "intermediate absolute link", files: map[string]string{"lnk": "->@"}, artifact: "lnk/secret", wantLink: "lnk"},
		{name: "deep intermediate link", files: map[string]string{"a/b/lnk": "->../../../outside"}, artifact: "a/b/lnk/secret", wantLink: "a/b/lnk"},
		{name: "link to a link out", files: map[string]string{"a": "->b", "b": "->../outside"}, artifact: "a/secret", wantLink: "b"},
		{name: "out and back in", files: map[string]string{"data.txt": "d", "l": "->../job/data.txt"}, artifact: "l", wantLink: "l"},
		{name: "dot-dot inside a link's target", files: map[string]string{"self": "->.", "up": "->self/.."}, artifact: "up/outside/secret", wantLink: "up"},
		{name: "path climbs out", files: map[string]string{"x": "x"}, artifact: "../outside/secret", wantLink: ""},
		{name: "leaf link out is left out", files: map[string]string{"model/w.bin": "w", "model/s": "->../../outside/secret", "model/abs": "->@/secret"}, artifact: "model",
			want: map[string]string{"model/w.bin": "w"}, wantSkipped: []string{"model/abs outside", "model/s outside"}},
		{name: "leaf link to a link out is left out", files: map[string]string{"model/w.bin": "w", "model/a": "->b", "model/b": "->../../outside/secret"}, artifact: "model",
			want: map[string]string{"model/w.bin": "w"}, wantSkipped: []string{"model/a outside", "model/b outside"}},
		{name: "root link inside is followed", files: map[string]string{"out": "->build", "build/x": "x", "build/y/z": "z"}, artifact: "out",
			want: map[string]string{"out/x": "x", "out/y/z": "z"}},
		{name: "root link to a file inside", files: map[string]string{"latest": "->epochs/10.bin", "epochs/10.bin": "ten"}, artifact: "latest",
			want: map[string]string{"latest": "ten"}},
		{name: "intermediate link inside", files: map[string]string{"cur": "->runs/3", "runs/3/m.bin": "m"}, artifact: "cur/m.bin",
			want: map[string]string{"cur/m.bin": "m"}},
		{name: "leaf link inside with ../..", files: map[string]string{"model/sub/l": "->../../data.txt", "data.txt": "d"}, artifact: "model",
			want: map[string]string{"model/sub/l": "d"}},
		{name: "link to a directory inside is not followed", files: map[string]string{"model/w": "w", "model/d": "->../build", "model/self": "->.", "build/x": "x"}, artifact: "model",
			want: map[string]string{"model/w": "w"}, wantSkipped: []string{"model/d directory", "model/self directory"}},
		{name: "dangling link", files: map[string]string{"model/w": "w", "model/gone": "->nothing"}, artifact: "model",
			want: map[string]string{"model/w": "w"}, wantSkipped: []string{"model/gone not exist"}},
		{name: "link loop", files: map[string]string{"a": "->b", "b": "->a"}, artifact: "a", wantLink: "-"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d, _ := setup(t, tt.files)
			files, skipped, err := d.Files(tt.artifact)
			if tt.want == nil {
				if err == nil {
					t.Fatalf("Files(%q) = %v, want an error", tt.artifact, files)
				}
				if tt.wantLink != "-" {
					wantEscape(t, err, tt.wantLink)
				}
				t.Logf("refused: %v", err)
				return
			}
			if err != nil {
				t.Fatalf("Files(%q): %v", tt.artifact, err)
			}
			got := map[string]string{}
			for _, f := range files {
				got[f] = read(t, d, f)
			}
			if !maps(got, tt.want) {
				t.Errorf("files %v, want %v", got, tt.want)
			}
			if len(skipped) != len(tt.wantSkipped) {
				t.Fatalf("skipped %v, want %v", skipped, tt.wantSkipped)
			}
			for i, s := range skipped {
				name, word, _ := strings.Cut(tt.wantSkipped[i], " ")
				if s.Name != name || !strings.Contains(s.Reason, word) {
					t.Errorf("skipped %v, want %v", skipped, tt.wantSkipped)
				}
			}
		})
	}
}

func maps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestFilesMissing(t *testing.T) {
	t.Parallel()
	d, _ := setup(t, map[string]string{"dangling": "->nothing"})
	for _, name := range []string{"nope", "dangling", "nope/x"} {
		if _, _, err := d.Files(name); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Files(%q): %v, want not exist", name, err)
		}
	}
}

// TestOpenRace: a directory swapped for a link out between the listing and
// the opening of a file under it (the job still runs, or its container is
// stopped half way) is refused when the file is opened; the outside is not
// read.
func TestOpenRace(t *testing.T) {
	t.Parallel()
	for _, target := range []string{"../outside", "@"} {
		t.Run(target, func(t *testing.T) {
			t.Parallel()
			d, outside := setup(t, map[string]string{"model/secret": "mine"})
			files, _, err := d.Files("model")
			if err != nil || len(files) != 1 {
				t.Fatalf("Files = %v, %v", files, err)
			}
			swapped := false
			jobdir.SetBeforeOpen(d, func(string) {
				dir := filepath.Join(d.Path(), "model")
				if err := os.RemoveAll(dir); err != nil {
					t.Fatal(err)
				}
				to := target
				if to == "@" {
					to = outside
				}
				if err := os.Symlink(to, dir); err != nil {
					t.Fatal(err)
				}
				swapped = true
			})
			f, err := d.Open(files[0])
			if err == nil {
				b, _ := io.ReadAll(f)
				f.Close()
				t.Fatalf("opened %s after the swap, read %q", files[0], b)
			}
			if !swapped {
				t.Fatal("the hook did not run")
			}
			wantEscape(t, err, "model")
		})
	}
}

// TestWriteFile: writing a dependency's artifact with symbolic links at
// every position. Nothing is written outside; links inside are kept.
func TestWriteFile(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		files    map[string]string
		write    string
		wantLink string            // the link an EscapeError names; "-" for another error
		want     map[string]string // what the directory holds afterwards (content, or ->target for a link)
	}{
		{name: "new file in new directories", write: "data/nested/numbers.txt", want: map[string]string{"data/nested/numbers.txt": "new"}},
		{name: "replaces a file", files: map[string]string{"n.txt": "old"}, write: "n.txt", want: map[string]string{"n.txt": "new"}},
		{name: "intermediate link out", files: map[string]string{"data": "->../outside"}, write: "data/numbers.txt", wantLink: "data"},
		{name: "intermediate absolute link", files: map[string]string{"data": "->@"}, write: "data/numbers.txt", wantLink: "data"},
		{name: "deep intermediate link out", files: map[string]string{"a/data": "->../../outside"}, write: "a/data/b/numbers.txt", wantLink: "a/data"},
		{name: "link to a link out", files: map[string]string{"d": "->e", "e": "->../outside"}, write: "d/numbers.txt", wantLink: "e"},
		{name: "out and back in", files: map[string]string{"d": "->../job/real", "real/": ""}, write: "d/numbers.txt", wantLink: "d"},
		{name: "path climbs out", write: "../outside/numbers.txt", wantLink: ""},
		{name: "absolute path", write: "/tmp/numbers.txt", wantLink: "-"},
		{name: "leaf link out is replaced, not written through", files: map[string]string{"secret": "->../outside/secret"}, write: "secret",
			want: map[string]string{"secret": "new"}},
		{name: "leaf absolute link is replaced", files: map[string]string{"secret": "->@/secret"}, write: "secret",
			want: map[string]string{"secret": "new"}},
		{name: "intermediate link inside is followed and kept", files: map[string]string{"data": "->real", "real/old": "o"}, write: "data/numbers.txt",
			want: map[string]string{"data": "->real", "real/old": "o", "real/numbers.txt": "new"}},
		{name: "intermediate link inside with ..", files: map[string]string{"a/data": "->../real", "real/": ""}, write: "a/data/x/n.txt",
			want: map[string]string{"a/data": "->../real", "real/x/n.txt": "new"}},
		{name: "leaf link inside is replaced, its target untouched", files: map[string]string{"n.txt": "->real/x", "real/x": "x"}, write: "n.txt",
			want: map[string]string{"n.txt": "new", "real/x": "x"}},
		{name: "a directory there", files: map[string]string{"n.txt/": ""}, write: "n.txt", wantLink: "-"},
		{name: "a file on the way", files: map[string]string{"f": "f"}, write: "f/n.txt", wantLink: "-"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d, outside := setup(t, tt.files)
			n, err := d.WriteFile(tt.write, strings.NewReader("new"), 0o644)
			if tt.want == nil {
				if err == nil {
					t.Fatalf("WriteFile(%q) succeeded", tt.write)
				}
				if tt.wantLink != "-" {
					wantEscape(t, err, tt.wantLink)
				}
				t.Logf("refused: %v", err)
			} else if err != nil || n != 3 {
				t.Fatalf("WriteFile(%q) = %d, %v", tt.write, n, err)
			}
			if got := tree(t, outside); !maps(got, map[string]string{"secret": secret}) {
				t.Errorf("outside: %v", got)
			}
			if tt.want != nil {
				want := map[string]string{}
				for k, v := range tt.files {
					if !strings.HasSuffix(k, "/") {
						want[k] = v
					}
				}
				for k, v := range tt.want {
					want[k] = v
				}
				if got := tree(t, d.Path()); !maps(got, want) {
					t.Errorf("job directory %v, want %v", got, want)
				}
			}
		})
	}
}

// TestWriteFileRace: the directory of the file is swapped for a link out
// between the check and the opening.
func TestWriteFileRace(t *testing.T) {
	t.Parallel()
	d, outside := setup(t, map[string]string{"data/": ""})
	jobdir.SetBeforeOpen(d, func(string) {
		dir := filepath.Join(d.Path(), "data")
		if err := os.Remove(dir); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(outside, dir); err != nil {
			t.Fatal(err)
		}
	})
	_, err := d.WriteFile("data/numbers.txt", strings.NewReader("new"), 0o644)
	wantEscape(t, err, "data")
	if got := tree(t, outside); !maps(got, map[string]string{"secret": secret}) {
		t.Errorf("outside: %v", got)
	}
}

// tree lists dir: files with their content, links as ->target.
func tree(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		switch {
		case e.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			out[filepath.ToSlash(rel)] = "->" + target
		case e.Type().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			out[filepath.ToSlash(rel)] = string(b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestClean: cleaning and removing never follow a link.
func TestClean(t *testing.T) {
	t.Parallel()
	d, outside := setup(t, map[string]string{"a/b": "b", "l": "->../outside", "abs": "->@", "a/l": "->../../outside/secret"})
	if err := d.Clean(); err != nil {
		t.Fatal(err)
	}
	if got := tree(t, d.Path()); len(got) != 0 {
		t.Errorf("left %v", got)
	}
	if got := tree(t, outside); !maps(got, map[string]string{"secret": secret}) {
		t.Errorf("outside: %v", got)
	}
}

func TestRoot(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	outside := filepath.Join(base, "outside")
	if err := os.MkdirAll(filepath.Join(outside, "keep"), 0o755); err != nil {
		t.Fatal(err)
	}
	r, err := jobdir.OpenRoot(filepath.Join(base, "work"))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if fi, err := os.Stat(r.Path()); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("work directory %v, %v; want 0700", fi.Mode(), err)
	}
	// A job's directory that became a link out (a job of the shell
	// executor can do that): removed as a link, the outside untouched.
	if err := os.Symlink(outside, filepath.Join(r.Path(), "job1")); err != nil {
		t.Fatal(err)
	}
	d, err := r.Create("job1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.WriteFile("f", strings.NewReader("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	d.Close()
	if fi, err := os.Lstat(filepath.Join(r.Path(), "job1", "f")); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("job1/f: %v, %v", fi, err)
	}
	if err := os.Symlink(outside, filepath.Join(r.Path(), "job2")); err != nil {
		t.Fatal(err)
	}
	if err := r.Clean(); err != nil {
		t.Fatal(err)
	}
	if des, _ := os.ReadDir(r.Path()); len(des) != 1 || des[0].Name() != ".dstack-runner-work" {
		t.Errorf("work directory holds %v, want its marker only", des)
	}
	if _, err := os.Stat(filepath.Join(outside, "keep")); err != nil {
		t.Errorf("outside: %v", err)
	}
	for _, bad := range []string{"", ".", "..", "a/b", "../x"} {
		if _, err := r.Create(bad); err == nil {
			t.Errorf("Create(%q) succeeded", bad)
		}
	}
	// Opened again (the runner restarts): its own directory is accepted.
	r2, err := jobdir.OpenRoot(r.Path())
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	r2.Close()
}

// TestRootRefusesADirectoryInUse: a --work-dir that holds someone's files
// is refused, not emptied.
func TestRootRefusesADirectoryInUse(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "thesis.tex"), []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := jobdir.OpenRoot(dir); err == nil || !strings.Contains(err.Error(), "thesis.tex") {
		t.Fatalf("OpenRoot of a directory in use: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "thesis.tex")); err != nil || string(b) != "mine" {
		t.Errorf("the file is gone: %v", err)
	}
	empty := t.TempDir()
	r, err := jobdir.OpenRoot(empty)
	if err != nil {
		t.Fatalf("OpenRoot of an empty directory: %v", err)
	}
	r.Close()
}

func TestLocal(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"data/train.csv", "data/train.csv"},
		{"out/", "out"},
		{"./a/../b", "b"},
		{".", "."},
		{"", ""},
		{"/etc/passwd", ""},
		{"..", ""},
		{"../x", ""},
		{"a/../../x", ""},
		{"a\x00b", ""},
	}
	for _, tt := range tests {
		got, err := jobdir.Local(tt.in)
		if (err != nil) != (tt.want == "") || (err == nil && got != tt.want) {
			t.Errorf("Local(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}
