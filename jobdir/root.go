package jobdir

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Root is the directory that holds the jobs' directories: the runner's work
// directory. A job's directory is made, opened and removed through it, by a
// name that cannot lead out of it, and removal never follows a link.
type Root struct {
	root *os.Root
	path string
}

// marker is the file that marks a directory as a runner's work directory:
// Clean empties only a directory that holds it.
const marker = ".dstack-runner-work"

// OpenRoot opens the work directory path, creating it (0700) if needed. A
// directory that is neither new, nor empty, nor marked as a work directory
// by an earlier start is refused: Clean would remove what it holds.
func OpenRoot(path string) (*Root, error) {
	if err := os.MkdirAll(path, 0o700); err != nil {
		return nil, fmt.Errorf("work directory: %w", err)
	}
	r, err := os.OpenRoot(path)
	if err != nil {
		return nil, fmt.Errorf("work directory: %w", err)
	}
	if _, err := r.Lstat(marker); err != nil {
		names, err := readNames(r)
		if err == nil && len(names) > 0 {
			err = fmt.Errorf("%s holds files the runner did not put there (%s): give --work-dir a new or empty directory, as the runner removes what it holds", path, strings.Join(names[:min(len(names), 3)], ", "))
		}
		if err == nil {
			err = r.WriteFile(marker, []byte("The dstack runner's work directory: it empties it at start.\n"), 0o600)
		}
		if err != nil {
			r.Close()
			return nil, fmt.Errorf("work directory: %w", err)
		}
	}
	return &Root{root: r, path: path}, nil
}

// Close releases the work directory.
func (r *Root) Close() error { return r.root.Close() }

// Path is the work directory's path on the host.
func (r *Root) Path() string { return r.path }

// Create makes an empty directory name (0755), removing whatever was there,
// and opens it.
func (r *Root) Create(name string) (*Dir, error) {
	if err := r.Remove(name); err != nil {
		return nil, err
	}
	if err := r.root.Mkdir(name, 0o755); err != nil {
		return nil, fmt.Errorf("create the job's directory: %w", err)
	}
	sub, err := r.root.OpenRoot(name)
	if err != nil {
		return nil, fmt.Errorf("open the job's directory: %w", err)
	}
	return &Dir{root: sub, path: filepath.Join(r.path, name)}, nil
}

// Remove removes the directory name and everything in it.
func (r *Root) Remove(name string) error {
	if clean, err := Local(name); err != nil || clean == "." || clean != name || filepath.Base(name) != name {
		return fmt.Errorf("job directory %q is not a plain name", name)
	}
	if err := r.root.RemoveAll(name); err != nil {
		return fmt.Errorf("remove the job's directory: %w", err)
	}
	return nil
}

// Clean removes everything in the work directory but its marker: what jobs
// of an earlier life of the runner left.
func (r *Root) Clean() error {
	if err := clean(r.root, marker); err != nil {
		return fmt.Errorf("clean the work directory %s: %w", r.path, err)
	}
	return nil
}
