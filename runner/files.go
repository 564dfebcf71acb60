package runner

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/client"
	"github.com/dstackai/dstack/codearchive"
	"github.com/dstackai/dstack/jobdir"
)

// This file moves files between the server and a job's working directory:
// the code and the dependencies' artifacts in, the job's artifacts out.
// Every file operation in the directory goes through the job's jobdir.Dir:
// the job may have put symbolic links anywhere in it, and none that leads
// out is followed (see package jobdir).

// downloadCode fetches the job's code archive and unpacks it into the
// working directory.
func (j *job) downloadCode(ctx context.Context) error {
	return j.do(ctx, "download code", func(ctx context.Context, c *client.Client) error {
		rc, err := c.JobCode(ctx, j.id, j.lease)
		if err != nil {
			return err
		}
		defer rc.Close()
		if err := j.dir.Clean(); err != nil {
			return permanent(fmt.Errorf("clean %s: %w", j.dir.Path(), err))
		}
		if err := codearchive.UnpackInto(rc, j.dir, codearchive.UnpackOptions{MaxSize: j.r.cfg.MaxCodeSize}); err != nil {
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
// job's user. An artifact replaces what the code has at its path, a file or
// a symbolic link, and is never written through a link; a link on the way
// to it that leads out of the directory fails the job, naming the link.
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
			if _, err := jobdir.Local(f.Path); err != nil {
				return fmt.Errorf("artifact of %s: %w", depName(d), err)
			}
			if err := j.downloadFile(ctx, d.JobID, f); err != nil {
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

func (j *job) downloadFile(ctx context.Context, depJobID string, f api.ArtifactFile) error {
	return j.do(ctx, "download artifact", func(ctx context.Context, c *client.Client) error {
		rc, err := c.JobDependencyArtifact(ctx, j.id, j.lease, depJobID, f.Path)
		if err != nil {
			return err
		}
		defer rc.Close()
		h := sha256.New()
		in := &readTracker{r: io.TeeReader(rc, h)}
		n, err := j.dir.WriteFile(f.Path, in, 0o644)
		switch {
		case err != nil && in.err != nil && errors.Is(err, in.err):
			return err // the stream broke: retry
		case err != nil:
			return permanent(err) // refused, or the disk's failure
		case n != f.Size:
			return fmt.Errorf("got %d bytes of %d", n, f.Size)
		}
		// Artifacts uploaded before the server recorded hashes have none.
		if got := hex.EncodeToString(h.Sum(nil)); f.SHA256 != "" && got != f.SHA256 {
			return permanent(fmt.Errorf("its content does not match the SHA-256 the server recorded at upload (got %s, want %s): the stored file is damaged", got, f.SHA256))
		}
		return nil
	})
}

// readTracker remembers its reader's error, to tell a broken stream from a
// failure to write.
type readTracker struct {
	r   io.Reader
	err error
}

func (t *readTracker) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if err != nil && err != io.EOF {
		t.err = err
	}
	return n, err
}

// artifactFile is one file to upload.
type artifactFile struct {
	rel string // slash-separated, relative to the working directory
}

// collectArtifacts lists the regular files under the job's artifact paths.
// Paths that do not exist are returned apart. A path that leads out of the
// directory through a symbolic link is an error that names the link. In the
// trees, a symbolic link to a regular file inside the directory is uploaded
// with its target's content; other links (out of the directory, dangling,
// to a directory) are not followed and are returned in skipped.
func collectArtifacts(d *jobdir.Dir, paths []string) (files []artifactFile, missing []string, skipped []jobdir.Skipped, err error) {
	seen := map[string]bool{}
	for _, p := range paths {
		names, skip, err := d.Files(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			missing = append(missing, p)
			continue
		case err != nil:
			return nil, nil, nil, fmt.Errorf("artifact path %q: %w", p, err)
		}
		for _, name := range names {
			if !seen[name] {
				seen[name] = true
				files = append(files, artifactFile{rel: name})
			}
		}
		for _, s := range skip {
			if !seen[s.Name] {
				seen[s.Name] = true
				skipped = append(skipped, s)
			}
		}
	}
	return files, missing, skipped, nil
}

// uploadArtifacts uploads every file under the job's artifact paths, and
// notes in the job's log the links it left out. It returns the paths that
// did not exist.
func (j *job) uploadArtifacts(ctx context.Context, sp *spool) (missing []string, err error) {
	files, missing, skipped, err := collectArtifacts(j.dir, j.spec.Artifacts)
	if err != nil {
		return nil, err
	}
	for _, s := range skipped {
		sp.Note("artifact %s left out: %s", s.Name, s.Reason)
		j.log.Info("artifact left out", "path", s.Name, "reason", s.Reason)
	}
	for _, f := range files {
		err := j.do(ctx, "upload artifact", func(ctx context.Context, c *client.Client) error {
			// Opened again through the directory: what was listed may have
			// become a link since.
			in, err := j.dir.Open(f.rel)
			if err != nil {
				return permanent(err)
			}
			defer in.Close()
			st, err := in.Stat()
			if err != nil {
				return permanent(err)
			}
			err = c.JobArtifactUpload(ctx, j.id, j.lease, f.rel, in, st.Size())
			if client.IsCode(err, api.CodeQuotaExceeded) {
				// The user's storage is full: waiting would hold the job
				// until they delete runs; the job fails and says why.
				return permanent(err)
			}
			return err
		})
		if err != nil {
			return missing, fmt.Errorf("upload artifact %s: %w", f.rel, err)
		}
	}
	j.log.Debug("artifacts uploaded", "files", len(files), "missing", len(missing), "skipped", len(skipped))
	return missing, nil
}
