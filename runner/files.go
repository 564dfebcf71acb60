package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/client"
	"github.com/dstackai/dstack/codearchive"
)

// This file moves files between the server and a job's working directory:
// the code and the dependencies' artifacts in, the job's artifacts out.

// localPath turns a slash-separated path relative to dir into a path under
// dir, refusing anything that would land outside it.
func localPath(dir, rel string) (string, error) {
	if rel == "" || path.IsAbs(rel) || filepath.IsAbs(rel) {
		return "", fmt.Errorf("path %q must be relative to the working directory", rel)
	}
	clean := path.Clean(rel)
	if clean == ".." || strings.HasPrefix(clean, "../") {
		return "", fmt.Errorf("path %q leaves the working directory", rel)
	}
	return filepath.Join(dir, filepath.FromSlash(clean)), nil
}

// downloadCode fetches the job's code archive and unpacks it into the
// working directory.
func (j *job) downloadCode(ctx context.Context) error {
	return j.do(ctx, "download code", func(ctx context.Context, c *client.Client) error {
		rc, err := c.JobCode(ctx, j.id, j.lease)
		if err != nil {
			return err
		}
		defer rc.Close()
		if err := cleanDir(j.dir); err != nil {
			return permanent(err)
		}
		if err := codearchive.Unpack(rc, j.dir, codearchive.UnpackOptions{MaxSize: j.r.cfg.MaxCodeSize}); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			// A broken stream is worth another try; a bad archive is not,
			// and the archive package cannot tell us which: one retry
			// policy for both would loop on a bad archive. Retry only
			// what the transport reports as such.
			var ue *client.UnreachableError
			if errors.As(err, &ue) || errors.Is(err, io.ErrUnexpectedEOF) {
				return err
			}
			return permanent(err)
		}
		return nil
	})
}

// downloadDependencies places the artifacts of the job's dependencies in its
// working directory at their relative paths: those of its own run and those
// of earlier runs it names by tag alike. The server lists only jobs of the
// job's user.
func (j *job) downloadDependencies(ctx context.Context) error {
	var deps []api.Dependency
	err := j.do(ctx, "list dependencies", func(ctx context.Context, c *client.Client) error {
		var err error
		deps, err = c.JobDependencies(ctx, j.id, j.lease)
		return err
	})
	if err != nil {
		return err
	}
	for _, d := range deps {
		for _, f := range d.Files {
			dst, err := localPath(j.dir, f.Path)
			if err != nil {
				return fmt.Errorf("artifact of %s: %w", depName(d), err)
			}
			if err := j.downloadFile(ctx, d.JobID, f, dst); err != nil {
				return fmt.Errorf("artifact %s of %s: %w", f.Path, depName(d), err)
			}
		}
		j.log.Debug("dependency downloaded", "dependency", depName(d), "files", len(d.Files))
	}
	return nil
}

// depName names a dependency in messages: its workflow, and for one of an
// earlier, tagged run the tag and the run.
func depName(d api.Dependency) string {
	if d.Tag == "" {
		return d.Workflow
	}
	return fmt.Sprintf("%s:%s (run %s)", d.Workflow, d.Tag, d.RunName)
}

func (j *job) downloadFile(ctx context.Context, depJobID string, f api.ArtifactFile, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	return j.do(ctx, "download artifact", func(ctx context.Context, c *client.Client) error {
		rc, err := c.JobDependencyArtifact(ctx, j.id, j.lease, depJobID, f.Path)
		if err != nil {
			return err
		}
		defer rc.Close()
		out, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
		if err != nil {
			return permanent(err)
		}
		n, err := io.Copy(out, rc)
		if cerr := out.Close(); err == nil && cerr != nil {
			return permanent(cerr)
		}
		if err != nil {
			return err // the stream broke: retry
		}
		if n != f.Size {
			return fmt.Errorf("got %d bytes of %d", n, f.Size)
		}
		return nil
	})
}

// artifactFile is one file to upload.
type artifactFile struct {
	local string // path on disk
	rel   string // slash-separated, relative to the working directory
}

// collectArtifacts lists the regular files under the job's artifact paths.
// Paths that do not exist are returned apart; symbolic links are not
// followed.
func collectArtifacts(dir string, paths []string) (files []artifactFile, missing []string, err error) {
	seen := map[string]bool{}
	for _, p := range paths {
		root, err := localPath(dir, p)
		if err != nil {
			return nil, nil, err
		}
		if _, err := os.Lstat(root); errors.Is(err, fs.ErrNotExist) {
			missing = append(missing, p)
			continue
		}
		err = filepath.WalkDir(root, func(name string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if !d.Type().IsRegular() {
				return nil
			}
			rel, err := filepath.Rel(dir, name)
			if err != nil {
				return err
			}
			rel = filepath.ToSlash(rel)
			if !seen[rel] {
				seen[rel] = true
				files = append(files, artifactFile{local: name, rel: rel})
			}
			return nil
		})
		if err != nil {
			return nil, nil, fmt.Errorf("list artifact %s: %w", p, err)
		}
	}
	return files, missing, nil
}

// uploadArtifacts uploads every file under the job's artifact paths. It
// returns the paths that did not exist.
func (j *job) uploadArtifacts(ctx context.Context) (missing []string, err error) {
	files, missing, err := collectArtifacts(j.dir, j.spec.Artifacts)
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		err := j.do(ctx, "upload artifact", func(ctx context.Context, c *client.Client) error {
			in, err := os.Open(f.local)
			if err != nil {
				return permanent(err)
			}
			defer in.Close()
			st, err := in.Stat()
			if err != nil {
				return permanent(err)
			}
			return c.JobArtifactUpload(ctx, j.id, j.lease, f.rel, in, st.Size())
		})
		if err != nil {
			return missing, fmt.Errorf("upload artifact %s: %w", f.rel, err)
		}
	}
	j.log.Debug("artifacts uploaded", "files", len(files), "missing", len(missing))
	return missing, nil
}

// cleanDir empties dir, creating it if needed.
func cleanDir(dir string) error {
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("clean %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	return nil
}
