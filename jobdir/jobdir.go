// Package jobdir confines the runner's file operations to a job's working
// directory: unpacking the code, writing the artifacts of the job's
// dependencies, reading the job's own artifacts and cleaning up all go
// through a Dir (or, for the directory that holds the jobs' directories, a
// Root), over an os.Root. The job writes in its directory what it likes,
// symbolic links included, and may change them while the runner works in
// it; whatever it does, the runner reads and writes nothing outside.
//
// The rules, the same for every operation:
//
//   - A path is relative and does not climb out with "..".
//   - A symbolic link on a path is followed while it stays inside the
//     directory. One that leads out (an absolute target, or a relative one
//     that climbs above the directory, directly or through other links) is
//     refused with an *EscapeError that names it and its target; os.Root
//     refuses it again at the moment of the call, so a link made or changed
//     between a check and the call that acts on it leads nowhere either.
//   - Nothing is written through a symbolic link at the end of a path: a
//     file written where a link is replaces the link.
//   - Removal never follows a link: it removes the link.
package jobdir

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
)

// ErrOutside is matched (errors.Is) by every error that refuses a path
// because it leads outside the directory.
var ErrOutside = errors.New("outside the job's directory")

// EscapeError refuses a path that leads outside the directory.
type EscapeError struct {
	// Path is the path asked for, relative to the directory.
	Path string
	// Link is the symbolic link that leads out, relative to the directory,
	// and Target its target; Link is empty when Path itself climbs out.
	Link, Target string
}

func (e *EscapeError) Error() string {
	switch {
	case e.Link == "":
		return fmt.Sprintf("%q is %s", e.Path, ErrOutside)
	case e.Link == e.Path:
		return fmt.Sprintf("%q is a symbolic link to %q, %s", e.Path, e.Target, ErrOutside)
	default:
		return fmt.Sprintf("%q goes through the symbolic link %q to %q, %s", e.Path, e.Link, e.Target, ErrOutside)
	}
}

// Is makes errors.Is(err, ErrOutside) hold.
func (e *EscapeError) Is(target error) bool { return target == ErrOutside }

// maxLinks bounds the symbolic links followed in one path, as the kernel's
// own limit does.
const maxLinks = 40

// Dir is a job's working directory. Its methods are safe for concurrent use.
type Dir struct {
	root *os.Root
	path string
	// beforeOpen, when set (by tests), runs between the check of a path
	// and the call that opens it.
	beforeOpen func(name string)
}

// Open opens the existing directory path as a Dir.
func Open(path string) (*Dir, error) {
	r, err := os.OpenRoot(path)
	if err != nil {
		return nil, err
	}
	return &Dir{root: r, path: path}, nil
}

// Close releases the directory. A closed Dir cannot be used.
func (d *Dir) Close() error { return d.root.Close() }

// Path is the directory's path on the host, as given to Open.
func (d *Dir) Path() string { return d.path }

// Root is the directory's os.Root, for the calls this package does not wrap
// (codearchive's unpacking makes directories, files and links with it).
// Whatever goes through it stays inside; the rules on links above are for
// the caller to apply, with Check.
func (d *Dir) Root() *os.Root { return d.root }

// Local checks that name is a relative path that does not climb out of the
// directory and returns it cleaned, slash-separated.
func Local(name string) (string, error) {
	if name == "" || strings.ContainsRune(name, 0) {
		return "", fmt.Errorf("%q is not a file name", name)
	}
	if path.IsAbs(name) || strings.HasPrefix(name, `\`) {
		return "", fmt.Errorf("path %q must be relative to the job's directory", name)
	}
	clean := path.Clean(name)
	if clean == ".." || strings.HasPrefix(clean, "../") {
		return "", &EscapeError{Path: name}
	}
	return clean, nil
}

// Check resolves name, following its symbolic links (the last one too), as
// the kernel would, and returns an *EscapeError if it leads out of the
// directory. A path that does not exist, or not wholly, is no error: what is
// made there is made through the os.Root.
func (d *Dir) Check(name string) error {
	_, err := d.resolve(name, true)
	return err
}

type link struct{ name, target string }

// component is one name still to resolve; via is the index of the link whose
// target it came from, -1 for the path asked for.
type component struct {
	name string
	via  int
}

// resolve returns the path name leads to, with no link on it (the last
// component a link when followLast is false), or an *EscapeError.
func (d *Dir) resolve(name string, followLast bool) (string, error) {
	clean, err := Local(name)
	if err != nil {
		return "", err
	}
	var (
		links   []link
		done    []string
		missing bool // a component does not exist: the rest is lexical
	)
	todo := components(clean, -1)
	for len(todo) > 0 {
		c := todo[0]
		todo = todo[1:]
		switch c.name {
		case "", ".":
			continue
		case "..":
			if len(done) == 0 {
				if c.via < 0 {
					return "", &EscapeError{Path: clean}
				}
				return "", &EscapeError{Path: clean, Link: links[c.via].name, Target: links[c.via].target}
			}
			done = done[:len(done)-1]
			continue
		}
		cur := strings.Join(append(done[:len(done):len(done)], c.name), "/")
		if missing {
			done = append(done, c.name)
			continue
		}
		fi, err := d.root.Lstat(cur)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			missing = true
			done = append(done, c.name)
			continue
		case err != nil:
			return "", err
		case fi.Mode()&fs.ModeSymlink == 0 && !fi.IsDir() && len(todo) > 0:
			return "", fmt.Errorf("%q goes through %q, which is not a directory", clean, cur)
		case fi.Mode()&fs.ModeSymlink == 0 || (len(todo) == 0 && !followLast):
			done = append(done, c.name)
			continue
		}
		if len(links) == maxLinks {
			return "", fmt.Errorf("%q: too many levels of symbolic links", clean)
		}
		target, err := d.root.Readlink(cur)
		if err != nil {
			return "", err
		}
		links = append(links, link{cur, target})
		if path.IsAbs(target) || strings.HasPrefix(target, `\`) {
			return "", &EscapeError{Path: clean, Link: cur, Target: target}
		}
		// The target replaces the link, relative to the link's directory.
		todo = append(components(target, len(links)-1), todo...)
	}
	if len(done) == 0 {
		return ".", nil
	}
	return strings.Join(done, "/"), nil
}

func components(p string, via int) []component {
	parts := strings.Split(p, "/")
	out := make([]component, len(parts))
	for i, s := range parts {
		out[i] = component{s, via}
	}
	return out
}

// explain turns the error of an os.Root call on name into an *EscapeError
// when name leads out now (a link made or changed since it was checked),
// and returns err otherwise.
func (d *Dir) explain(name string, err error) error {
	if err == nil || errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if _, rerr := d.resolve(name, true); errors.Is(rerr, ErrOutside) {
		return rerr
	}
	return err
}

// Open opens the regular file name for reading, following the links on its
// path that stay inside.
func (d *Dir) Open(name string) (*os.File, error) {
	if _, err := d.resolve(name, true); err != nil {
		return nil, err
	}
	name = path.Clean(name)
	if d.beforeOpen != nil {
		d.beforeOpen(name)
	}
	f, err := d.root.Open(name)
	if err != nil {
		return nil, d.explain(name, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%q is not a regular file", name)
	}
	return f, nil
}

// Skipped is what Files left out, and why.
type Skipped struct {
	Name   string // relative to the directory
	Reason string
}

func (s Skipped) String() string { return s.Name + " (" + s.Reason + ")" }

// Files lists the regular files at or under name, slash-separated and
// relative to the directory, under the names they were found by. Links on
// name itself are followed while they stay inside; a name that leads out is
// an *EscapeError, one that does not exist an error matching
// fs.ErrNotExist. Inside the tree, a symbolic link to a regular file inside
// the directory is listed (its content is the target's); other links are
// not followed, and are returned in skipped with the reason: one that leads
// out, a dangling one, one to a directory (which would list files twice, or
// forever). Files that are not regular (sockets, devices) are skipped too.
func (d *Dir) Files(name string) (files []string, skipped []Skipped, err error) {
	if _, err := d.resolve(name, true); err != nil {
		return nil, nil, err
	}
	name = path.Clean(name)
	if _, err := d.root.Stat(name); err != nil {
		return nil, nil, d.explain(name, err)
	}
	err = fs.WalkDir(d.root.FS(), name, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return d.explain(p, err)
		}
		switch t := e.Type(); {
		case t.IsRegular():
			files = append(files, p)
		case t.IsDir():
		case t&fs.ModeSymlink != 0:
			reason, ok, err := d.linkedFile(p)
			if err != nil {
				return err
			}
			if ok {
				files = append(files, p)
			} else {
				skipped = append(skipped, Skipped{p, reason})
			}
		default:
			skipped = append(skipped, Skipped{p, "not a regular file"})
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return files, skipped, nil
}

// linkedFile reports whether the symbolic link p leads to a regular file
// inside the directory, and when it does not, why.
func (d *Dir) linkedFile(p string) (reason string, ok bool, err error) {
	target, err := d.root.Readlink(p)
	if err != nil {
		return "", false, err
	}
	if _, err := d.resolve(p, true); err != nil {
		if errors.Is(err, ErrOutside) {
			return fmt.Sprintf("a symbolic link to %q, %s", target, ErrOutside), false, nil
		}
		return fmt.Sprintf("a symbolic link to %q: %v", target, err), false, nil
	}
	fi, err := d.root.Stat(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Sprintf("a symbolic link to %q, which does not exist", target), false, nil
	case err != nil:
		return fmt.Sprintf("a symbolic link to %q: %v", target, d.explain(p, err)), false, nil
	case fi.IsDir():
		return fmt.Sprintf("a symbolic link to the directory %q, not followed", target), false, nil
	case !fi.Mode().IsRegular():
		return fmt.Sprintf("a symbolic link to %q, not a regular file", target), false, nil
	}
	return "", true, nil
}

// WriteFile writes what r yields to the file name, with mode perm, and
// returns how many bytes it wrote. It makes the directories above name
// (0755) as needed, following the links on the way that stay inside.
// Whatever is at name, a file or a link, is replaced, never written
// through; a directory there is an error.
func (d *Dir) WriteFile(name string, r io.Reader, perm fs.FileMode) (int64, error) {
	clean, err := Local(name)
	if err != nil {
		return 0, err
	}
	if clean == "." {
		return 0, fmt.Errorf("%q is not a file name", name)
	}
	parent, base := path.Split(clean)
	dir := "."
	if parent != "" {
		if dir, err = d.resolve(parent, true); err != nil {
			if esc := (*EscapeError)(nil); errors.As(err, &esc) {
				esc.Path = clean
			}
			return 0, err
		}
		if fi, err := d.root.Lstat(dir); err == nil && !fi.IsDir() {
			return 0, fmt.Errorf("%q goes through %q, which is not a directory", clean, dir)
		}
		if err := d.root.MkdirAll(dir, 0o755); err != nil {
			return 0, d.explain(clean, err)
		}
	}
	target := path.Join(dir, base)
	fi, err := d.root.Lstat(target)
	switch {
	case err == nil && fi.IsDir():
		return 0, fmt.Errorf("%q exists as a directory", clean)
	case err == nil:
		if err := d.root.Remove(target); err != nil {
			return 0, d.explain(clean, err)
		}
	case !errors.Is(err, fs.ErrNotExist):
		return 0, d.explain(clean, err)
	}
	if d.beforeOpen != nil {
		d.beforeOpen(target)
	}
	// O_EXCL: the name was just cleared, so a link made there meanwhile is
	// refused rather than followed.
	f, err := d.root.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return 0, d.explain(clean, err)
	}
	n, err := io.Copy(f, r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return n, err
}

// Clean removes everything in the directory, links removed, not followed.
func (d *Dir) Clean() error {
	return clean(d.root)
}

// clean removes everything in r but the names kept.
func clean(r *os.Root, keep ...string) error {
	names, err := readNames(r)
	if err != nil {
		return err
	}
	for _, n := range names {
		if slices.Contains(keep, n) {
			continue
		}
		if err := r.RemoveAll(n); err != nil {
			return err
		}
	}
	return nil
}

// readNames lists r, sorted.
func readNames(r *os.Root) ([]string, error) {
	f, err := r.Open(".")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	slices.Sort(names)
	return names, err
}
