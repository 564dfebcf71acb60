// Package pack packs a project's working directory into the gzip'd tar
// that becomes a run's code (the format of package codearchive).
//
// Dir honours .gitignore and .dstackignore files, at the root and in any
// subdirectory, with git's semantics (negation, directory-only and anchored
// patterns), through go-git's gitignore matcher. A .dstackignore is read
// after the .gitignore of the same directory, so it can both add exclusions
// and re-include (!pattern) what git ignores. As in git, nothing inside an
// excluded directory can be re-included. .git is always left out. It lives
// apart from codearchive so that the runner, which only unpacks, does not
// link go-git.
package pack

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/plumbing/format/gitignore"

	"github.com/dstackai/dstack/codearchive"
)

// Ignore files read in every directory, lowest priority first.
const (
	GitIgnore    = ".gitignore"
	DstackIgnore = ".dstackignore"
)

// Options tunes Dir.
type Options struct {
	// MaxSize is the most bytes of file content to pack, uncompressed;
	// zero means no limit.
	MaxSize int64
}

// Stats says what Dir packed.
type Stats struct {
	Files int   // regular files and symbolic links
	Bytes int64 // file content, uncompressed
}

// epoch is the modification time of every entry, for reproducible archives.
var epoch = time.Unix(0, 0)

// Dir writes dir as a gzip'd tar to w. Names in the archive are relative
// to dir, slash-separated, directories ending in '/'. It stops with ctx.
func Dir(ctx context.Context, dir string, w io.Writer, opts Options) (Stats, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return Stats{}, fmt.Errorf("pack code: %w", err)
	}
	if !fi.IsDir() {
		return Stats{}, fmt.Errorf("pack code: %s is not a directory", dir)
	}
	gz := gzip.NewWriter(w)
	p := &packer{ctx: ctx, root: dir, tw: tar.NewWriter(gz), opts: opts}
	if err := p.walk(nil, nil); err != nil {
		return p.stats, err
	}
	if err := p.tw.Close(); err != nil {
		return p.stats, fmt.Errorf("pack code: %w", err)
	}
	if err := gz.Close(); err != nil {
		return p.stats, fmt.Errorf("pack code: %w", err)
	}
	return p.stats, nil
}

type packer struct {
	ctx   context.Context
	root  string
	tw    *tar.Writer
	opts  Options
	stats Stats
}

// walk packs the directory at rel (path components under root) with the
// ignore patterns of its parents.
func (p *packer) walk(rel []string, patterns []gitignore.Pattern) error {
	dir := filepath.Join(append([]string{p.root}, rel...)...)
	own, err := readIgnoreFiles(dir, rel)
	if err != nil {
		return err
	}
	// A fresh slice: siblings must not see each other's patterns.
	patterns = append(patterns[:len(patterns):len(patterns)], own...)
	matcher := gitignore.NewMatcher(patterns)

	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("pack code: %w", err)
	}
	for _, e := range entries { // sorted by name
		if err := p.ctx.Err(); err != nil {
			return fmt.Errorf("pack code: %w", err)
		}
		name := e.Name()
		if name == ".git" {
			continue
		}
		child := append(rel[:len(rel):len(rel)], name)
		full := filepath.Join(dir, name)
		info, err := os.Lstat(full)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue // removed while packing
			}
			return fmt.Errorf("pack code: %w", err)
		}
		mode := info.Mode()
		if matcher.Match(child, mode.IsDir()) {
			continue
		}
		archiveName := path.Join(child...)
		switch {
		case mode.IsDir():
			if err := p.header(&tar.Header{Typeflag: tar.TypeDir, Name: archiveName + "/", Mode: int64(mode.Perm())}); err != nil {
				return err
			}
			if err := p.walk(child, patterns); err != nil {
				return err
			}
		case mode&fs.ModeSymlink != 0:
			target, err := os.Readlink(full)
			if err != nil {
				return fmt.Errorf("pack code: %w", err)
			}
			if err := p.header(&tar.Header{Typeflag: tar.TypeSymlink, Name: archiveName, Linkname: target, Mode: 0o777}); err != nil {
				return err
			}
			p.stats.Files++
		case mode.IsRegular():
			if err := p.file(full, archiveName, info); err != nil {
				return err
			}
		}
	}
	return nil
}

func (p *packer) header(h *tar.Header) error {
	h.ModTime = epoch
	h.Format = tar.FormatPAX
	if err := p.tw.WriteHeader(h); err != nil {
		return fmt.Errorf("pack code: %s: %w", h.Name, err)
	}
	return nil
}

func (p *packer) file(full, name string, info fs.FileInfo) error {
	size := info.Size()
	if p.opts.MaxSize > 0 && p.stats.Bytes+size > p.opts.MaxSize {
		return &codearchive.TooLargeError{Size: p.stats.Bytes + size, Limit: p.opts.MaxSize, Dir: p.root}
	}
	f, err := os.Open(full)
	if err != nil {
		return fmt.Errorf("pack code: %w", err)
	}
	defer f.Close()
	if err := p.header(&tar.Header{Typeflag: tar.TypeReg, Name: name, Size: size, Mode: int64(info.Mode().Perm())}); err != nil {
		return err
	}
	n, err := io.CopyN(p.tw, f, size)
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("pack code: %s shrank while it was packed; pack again", full)
	}
	if err != nil {
		return fmt.Errorf("pack code: %s: %w", full, err)
	}
	p.stats.Files++
	p.stats.Bytes += n
	return nil
}

// readIgnoreFiles reads the .gitignore then the .dstackignore of dir, whose
// place in the tree is domain.
func readIgnoreFiles(dir string, domain []string) ([]gitignore.Pattern, error) {
	var out []gitignore.Pattern
	for _, name := range []string{GitIgnore, DstackIgnore} {
		ps, err := readIgnoreFile(filepath.Join(dir, name), domain)
		if err != nil {
			return nil, err
		}
		out = append(out, ps...)
	}
	return out, nil
}

func readIgnoreFile(name string, domain []string) ([]gitignore.Pattern, error) {
	f, err := os.Open(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read ignore file: %w", err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.IsDir() {
		return nil, nil
	}
	var out []gitignore.Pattern
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := strings.TrimSuffix(sc.Text(), "\r")
		if strings.HasPrefix(line, "#") || strings.TrimSpace(line) == "" {
			continue
		}
		out = append(out, gitignore.ParsePattern(line, domain))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read ignore file %s: %w", name, err)
	}
	return out, nil
}
