package codearchive

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"

	"github.com/dstackai/dstack/jobdir"
)

// UnpackOptions tunes Unpack.
type UnpackOptions struct {
	// MaxSize is the most bytes of file content to write; zero means no
	// limit.
	MaxSize int64
	// MaxEntries is the most entries (files, directories, links) to
	// create; zero means no limit.
	MaxEntries int
}

// ErrUnsafePath is matched (errors.Is) by the error of Unpack when an entry
// would land outside the directory or be written through a link.
var ErrUnsafePath = errors.New("unsafe path in code archive")

// Unpack extracts the gzip'd tar read from r into dir, creating dir if
// needed, as UnpackInto does.
func Unpack(r io.Reader, dir string, opts UnpackOptions) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("unpack code: %w", err)
	}
	d, err := jobdir.Open(dir)
	if err != nil {
		return fmt.Errorf("unpack code: %w", err)
	}
	defer d.Close()
	return UnpackInto(r, d, opts)
}

// UnpackInto extracts the gzip'd tar read from r into the job's directory
// d. Entries whose names are absolute or climb out with "..", and entries
// whose path goes through a symbolic link, are refused with ErrUnsafePath.
// Symbolic links are recreated as they are when they stay inside the
// directory; one that leads out (an absolute target, or one that climbs
// above the directory, directly or through other links) is refused with
// ErrUnsafePath and jobdir.ErrOutside, naming it. Hard links and special
// files are refused. Permission bits are applied without setuid, setgid and
// sticky bits, and directories always keep rwx for their owner so that the
// runner can clean the job's directory up. On error, what was extracted so
// far stays in the directory.
func UnpackInto(r io.Reader, d *jobdir.Dir, opts UnpackOptions) error {
	root := d.Root()
	gz, err := gzip.NewReader(r)
	if err != nil {
		return fmt.Errorf("unpack code: %w", err)
	}
	defer gz.Close()
	u := &unpacker{root: root, dir: d.Path(), opts: opts, dirModes: map[string]fs.FileMode{}}
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("unpack code: %w", err)
		}
		if err := u.entry(h, tr); err != nil {
			return err
		}
	}
	// Links last, once every entry is in place: where one leads can depend
	// on links that came after it.
	for _, name := range u.links {
		fi, err := root.Lstat(name)
		if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
			continue // replaced by a later entry
		}
		// A dangling link or a loop is harmless: only one out is refused.
		if err := d.Check(name); errors.Is(err, jobdir.ErrOutside) {
			return fmt.Errorf("%w: %w; the runner follows no link out of the job's directory: make it point inside the project, or leave it out with a .dstackignore", ErrUnsafePath, err)
		}
	}
	// Directory modes last, deepest first, so that a read-only directory
	// does not stop its own files from being written.
	names := make([]string, 0, len(u.dirModes))
	for name := range u.dirModes {
		names = append(names, name)
	}
	slices.SortFunc(names, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
	for _, name := range names {
		if err := root.Chmod(name, u.dirModes[name]); err != nil {
			return fmt.Errorf("unpack code: %w", err)
		}
	}
	return nil
}

type unpacker struct {
	root     *os.Root
	dir      string
	opts     UnpackOptions
	size     int64
	entries  int
	dirModes map[string]fs.FileMode
	links    []string // the symbolic links made, to check at the end
}

func (u *unpacker) entry(h *tar.Header, r io.Reader) error {
	switch h.Typeflag {
	case tar.TypeXGlobalHeader, tar.TypeXHeader, tar.TypeGNULongName, tar.TypeGNULongLink:
		return nil // metadata the reader already applied
	}
	name, err := cleanName(h.Name)
	if err != nil {
		return err
	}
	if name == "." {
		if h.Typeflag == tar.TypeDir {
			return nil
		}
		return fmt.Errorf("%w: %q is not a file name", ErrUnsafePath, h.Name)
	}
	u.entries++
	if u.opts.MaxEntries > 0 && u.entries > u.opts.MaxEntries {
		return fmt.Errorf("unpack code: more than %d entries; leave some files out with a .dstackignore", u.opts.MaxEntries)
	}
	if err := u.parents(name); err != nil {
		return err
	}
	perm := fs.FileMode(h.Mode).Perm() //nolint:gosec // Perm keeps the low 9 bits only
	switch h.Typeflag {
	case tar.TypeDir:
		fi, err := u.root.Lstat(name)
		switch {
		case err == nil && fi.IsDir():
		case err == nil:
			return fmt.Errorf("%w: %q is a directory in the archive but exists as a file or link", ErrUnsafePath, name)
		case errors.Is(err, fs.ErrNotExist):
			if err := u.root.Mkdir(name, 0o755); err != nil {
				return fmt.Errorf("unpack code: %w", err)
			}
		default:
			return fmt.Errorf("unpack code: %w", err)
		}
		u.dirModes[name] = perm | 0o700 // the owner can always use it
	case tar.TypeReg:
		return u.file(name, perm, h.Size, r)
	case tar.TypeSymlink:
		if err := u.replace(name); err != nil {
			return err
		}
		if err := u.root.Symlink(h.Linkname, name); err != nil {
			return fmt.Errorf("unpack code: %w", err)
		}
		u.links = append(u.links, name)
	default:
		return fmt.Errorf("unpack code: %q: entries of type %q are not supported; only files, directories and symbolic links are", name, h.Typeflag)
	}
	return nil
}

// cleanName checks an archive name and returns it cleaned, relative.
func cleanName(name string) (string, error) {
	if name == "" || strings.ContainsRune(name, 0) {
		return "", fmt.Errorf("%w: %q is not a file name", ErrUnsafePath, name)
	}
	if strings.HasPrefix(name, "/") || strings.HasPrefix(name, `\`) {
		return "", fmt.Errorf("%w: %q is absolute", ErrUnsafePath, name)
	}
	for _, part := range strings.FieldsFunc(name, func(r rune) bool { return r == '/' || r == '\\' }) {
		if part == ".." {
			return "", fmt.Errorf("%w: %q climbs out of the directory", ErrUnsafePath, name)
		}
	}
	return path.Clean(name), nil
}

// parents creates the directories above name, refusing to go through
// anything that is not a directory.
func (u *unpacker) parents(name string) error {
	parts := strings.Split(name, "/")
	for i := 1; i < len(parts); i++ {
		p := strings.Join(parts[:i], "/")
		fi, err := u.root.Lstat(p)
		switch {
		case err == nil && fi.IsDir():
			continue
		case err == nil && fi.Mode()&fs.ModeSymlink != 0:
			return fmt.Errorf("%w: %q goes through the symbolic link %q", ErrUnsafePath, name, p)
		case err == nil:
			return fmt.Errorf("%w: %q goes through the file %q", ErrUnsafePath, name, p)
		case errors.Is(err, fs.ErrNotExist):
			if err := u.root.Mkdir(p, 0o755); err != nil {
				return fmt.Errorf("unpack code: %w", err)
			}
		default:
			return fmt.Errorf("unpack code: %w", err)
		}
	}
	return nil
}

// replace removes what is at name, unless it is a directory, so that a
// later entry of the same name wins without writing through a link.
func (u *unpacker) replace(name string) error {
	fi, err := u.root.Lstat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("unpack code: %w", err)
	}
	if fi.IsDir() {
		return fmt.Errorf("%w: %q exists as a directory", ErrUnsafePath, name)
	}
	if err := u.root.Remove(name); err != nil {
		return fmt.Errorf("unpack code: %w", err)
	}
	return nil
}

func (u *unpacker) file(name string, perm fs.FileMode, size int64, r io.Reader) error {
	if u.opts.MaxSize > 0 && u.size+size > u.opts.MaxSize {
		return &TooLargeError{Size: u.size + size, Limit: u.opts.MaxSize, Dir: u.dir}
	}
	if err := u.replace(name); err != nil {
		return err
	}
	// O_EXCL: the name was just cleared, so anything there now (a link
	// made meanwhile) is refused rather than followed.
	f, err := u.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm|0o600)
	if err != nil {
		return fmt.Errorf("unpack code: %w", err)
	}
	n, err := io.Copy(f, io.LimitReader(r, size))
	u.size += n
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("unpack code: %s: %w", name, err)
	}
	if n != size {
		return fmt.Errorf("unpack code: %s: archive is truncated", name)
	}
	if err := u.root.Chmod(name, perm); err != nil {
		return fmt.Errorf("unpack code: %w", err)
	}
	return nil
}
