// Package blob stores the large things a server keeps outside its database:
// code archives and job artifacts. Keys are slash-separated paths.
//
// Store is the one contract; Local keeps objects as files under a directory
// (the embedded default); package s3blob keeps them in an S3 bucket, and
// package blobtest is the conformance suite both pass.
package blob

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
)

// Errors of every Store.
var (
	// ErrNotFound: no object under the key.
	ErrNotFound = errors.New("object not found")
	// ErrInvalidKey: the key is not a ValidKey, or is one the store cannot
	// hold (a name too long for its file system).
	ErrInvalidKey = errors.New("invalid object key")
	// ErrConflict: the key passes through an existing object ("a" for
	// "a/b"), or other objects lie under it ("a/b" for "a"). A store on a
	// file system cannot hold both; a bucket can, and Put there does not
	// return it.
	ErrConflict = errors.New("object key conflicts with an existing object")
)

// Object describes a stored object.
type Object struct {
	Key  string
	Size int64
}

// Store keeps objects by key.
type Store interface {
	// Put writes r under key, replacing what was there only once r is read
	// whole: a failed Put leaves the old object, or none.
	Put(ctx context.Context, key string, r io.Reader) (int64, error)
	// Open reads the object from offset on; it returns the bytes that follow.
	Open(ctx context.Context, key string, offset int64) (io.ReadCloser, int64, error)
	// Stat returns the object's size, ErrNotFound if there is none.
	Stat(ctx context.Context, key string) (Object, error)
	// List returns the objects whose keys start with prefix, sorted by key.
	List(ctx context.Context, prefix string) ([]Object, error)
	// Delete removes the object under key; removing one that is not there
	// is not an error.
	Delete(ctx context.Context, key string) error
}

// DeletePrefix removes every object whose key starts with prefix (List's
// prefix) and returns how many bytes they held.
func DeletePrefix(ctx context.Context, s Store, prefix string) (int64, error) {
	objs, err := s.List(ctx, prefix)
	if err != nil {
		return 0, err
	}
	var n int64
	for _, o := range objs {
		if err := s.Delete(ctx, o.Key); err != nil {
			return n, err
		}
		n += o.Size
	}
	return n, nil
}

// ValidKey reports whether key is a clean relative slash path with no "."
// or ".." element.
func ValidKey(key string) bool {
	if key == "" || strings.HasPrefix(key, "/") || strings.Contains(key, "\\") || strings.ContainsRune(key, 0) {
		return false
	}
	if path.Clean(key) != key {
		return false
	}
	for _, el := range strings.Split(key, "/") {
		if el == "." || el == ".." || el == "" {
			return false
		}
	}
	return true
}

// ValidPrefix reports whether a List prefix is acceptable: the part before
// its last slash, when there is one, must be a valid key ("artifacts/j1/" and
// "artifacts/j" are, "../" is not). The part after may be any start of a name.
func ValidPrefix(prefix string) bool {
	i := strings.LastIndex(prefix, "/")
	return i <= 0 || ValidKey(prefix[:i])
}

// Local is a Store on the local file system.
type Local struct{ dir string }

// NewLocal returns a store under dir, creating it.
func NewLocal(dir string) (*Local, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("blob store: %w", err)
	}
	return &Local{dir: dir}, nil
}

func (l *Local) file(key string) (string, error) {
	if !ValidKey(key) {
		return "", fmt.Errorf("%w %q", ErrInvalidKey, key)
	}
	return filepath.Join(l.dir, filepath.FromSlash(key)), nil
}

// Put implements Store.
func (l *Local) Put(ctx context.Context, key string, r io.Reader) (int64, error) {
	name, err := l.file(key)
	if err != nil {
		return 0, err
	}
	if err := os.MkdirAll(filepath.Dir(name), 0o700); err != nil {
		return 0, fmt.Errorf("put %s: %w", key, fsErr(err))
	}
	// The temporary file is named apart from the object, so that an object
	// whose name is as long as the file system allows can be written.
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	tmp := filepath.Join(filepath.Dir(name), ".tmp-"+hex.EncodeToString(rnd[:]))
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return 0, fmt.Errorf("put %s: %w", key, fsErr(err))
	}
	n, err := io.Copy(f, ctxReader{ctx, r})
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, name)
	}
	if err != nil {
		os.Remove(tmp)
		return n, fmt.Errorf("put %s: %w", key, fsErr(err))
	}
	return n, nil
}

// fsErr adds ErrConflict to a file system error that says a key passes
// through a file or names a directory, and ErrInvalidKey to one that says
// a name is too long.
func fsErr(err error) error {
	switch {
	case errors.Is(err, syscall.ENOTDIR), errors.Is(err, syscall.EISDIR), errors.Is(err, syscall.EEXIST), errors.Is(err, syscall.ENOTEMPTY):
		return fmt.Errorf("%w: %w", ErrConflict, err)
	case errors.Is(err, syscall.ENAMETOOLONG):
		return fmt.Errorf("%w: %w", ErrInvalidKey, err)
	}
	return err
}

// Open implements Store.
func (l *Local) Open(_ context.Context, key string, offset int64) (io.ReadCloser, int64, error) {
	name, err := l.file(key)
	if err != nil {
		return nil, 0, err
	}
	f, err := os.Open(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, ErrNotFound
	}
	if err != nil {
		return nil, 0, err
	}
	st, err := f.Stat()
	if err != nil || st.IsDir() {
		f.Close()
		return nil, 0, ErrNotFound
	}
	if offset > st.Size() {
		offset = st.Size()
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, st.Size() - offset, nil
}

// Stat implements Store.
func (l *Local) Stat(_ context.Context, key string) (Object, error) {
	name, err := l.file(key)
	if err != nil {
		return Object{}, err
	}
	st, err := os.Stat(name)
	if errors.Is(err, fs.ErrNotExist) || (err == nil && st.IsDir()) {
		return Object{}, ErrNotFound
	}
	if err != nil {
		return Object{}, err
	}
	return Object{Key: key, Size: st.Size()}, nil
}

// List implements Store.
func (l *Local) List(_ context.Context, prefix string) ([]Object, error) {
	// Walk the deepest directory the prefix names whole.
	root := l.dir
	if !ValidPrefix(prefix) {
		return nil, fmt.Errorf("invalid prefix %q", prefix)
	}
	if i := strings.LastIndex(prefix, "/"); i > 0 {
		root = filepath.Join(l.dir, filepath.FromSlash(prefix[:i]))
	}
	var out []Object
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.IsDir() || strings.Contains(d.Name(), ".tmp-") {
			return nil
		}
		rel, err := filepath.Rel(l.dir, p)
		if err != nil {
			return err
		}
		key := filepath.ToSlash(rel)
		if !strings.HasPrefix(key, prefix) {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil //nolint:nilerr // removed since it was listed
		}
		out = append(out, Object{Key: key, Size: info.Size()})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", prefix, err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

// Delete implements Store. The directories the object leaves empty are
// removed with it, up to the store's own.
func (l *Local) Delete(_ context.Context, key string) error {
	name, err := l.file(key)
	if err != nil {
		return err
	}
	if st, err := os.Stat(name); err == nil && st.IsDir() {
		return nil // a directory is not an object
	}
	if err := os.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete %s: %w", key, fsErr(err))
	}
	l.removeEmptyParents(name)
	return nil
}

// removeEmptyParents removes the directories above the file name that are
// empty, up to the store's own.
func (l *Local) removeEmptyParents(name string) {
	for dir := filepath.Dir(name); dir != l.dir && strings.HasPrefix(dir, l.dir+string(filepath.Separator)); dir = filepath.Dir(dir) {
		if os.Remove(dir) != nil {
			return // not empty (or already gone): its parents are not empty either
		}
	}
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
