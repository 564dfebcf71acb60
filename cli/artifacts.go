package cli

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/client"
)

func (e *Env) artifactsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "artifacts",
		Short: "List and download a run's artifacts",
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usagef("unknown command %q for %q: use list or download", args[0], cmd.CommandPath())
			}
			return cmd.Help()
		},
	}
	cmd.AddCommand(e.artifactsListCmd(), e.artifactsDownloadCmd())
	return cmd
}

func (e *Env) artifactsListCmd() *cobra.Command {
	var asJSON, checkpoints bool
	cmd := &cobra.Command{
		Use:     "list RUN [--checkpoints] [--json]",
		Aliases: []string{"ls"},
		Short:   "List a run's artifact files",
		Long: `List a run's artifact files: those its jobs uploaded when they ended.

With --checkpoints, list instead the files of each job's latest complete
checkpoint (workflow key checkpoints:), which the job's next attempt, or
` + "`dstack run --resume RUN`" + `, starts from.`,
		Args: exactArgs("RUN"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if checkpoints {
				return e.checkpointsList(cmd.Context(), args[0], asJSON)
			}
			return e.artifactsList(cmd.Context(), args[0], asJSON)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON array of files (of checkpoints with --checkpoints)")
	cmd.Flags().BoolVar(&checkpoints, "checkpoints", false, "list the files of each job's latest checkpoint")
	return cmd
}

func (e *Env) checkpointsList(ctx context.Context, name string, asJSON bool) error {
	c, err := e.client()
	if err != nil {
		return err
	}
	cps, err := c.RunCheckpoints(ctx, name)
	if err != nil {
		return c.runErr(name, err)
	}
	if asJSON {
		return writeJSON(e.Stdout, cps)
	}
	if len(cps) == 0 {
		fmt.Fprintf(e.Stderr, "Run %s has no checkpoints: its workflows list no checkpoints:, none was synced yet, or its jobs are done (add keep-checkpoints: true to keep them).\n", name)
		return nil
	}
	now := e.Now()
	for _, cp := range cps {
		fmt.Fprintf(e.Stderr, "%s: %s\n", cp.Workflow, checkpointLine(&cp, now))
	}
	t := newTable(e.Stdout, "workflow", "path", "size", "sha256")
	for _, cp := range cps {
		for _, f := range cp.Manifest {
			t.row(cp.Workflow, f.Path, formatBytes(f.Size), f.SHA256)
		}
	}
	return t.flush()
}

func (e *Env) artifactsList(ctx context.Context, name string, asJSON bool) error {
	c, err := e.client()
	if err != nil {
		return err
	}
	files, err := c.ArtifactList(ctx, name)
	if err != nil {
		return c.runErr(name, err)
	}
	if asJSON {
		return writeJSON(e.Stdout, files)
	}
	if len(files) == 0 {
		fmt.Fprintf(e.Stderr, "Run %s has no artifacts (yet: a job's artifacts are uploaded when it ends).\n", name)
		return nil
	}
	t := newTable(e.Stdout, "workflow", "path", "size", "sha256")
	for _, f := range files {
		sum := f.SHA256
		if sum == "" {
			sum = "-"
		}
		t.row(f.Workflow, f.Path, formatBytes(f.Size), sum)
	}
	return t.flush()
}

func (e *Env) artifactsDownloadCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "download RUN [-o DIR]",
		Short: "Download a run's artifacts",
		Long: `Download a run's artifact files to DIR/<workflow>/<path> (DIR is the current
directory unless -o), whatever the number of jobs, so that the place of a file
never depends on the run's shape.

A file is written to <file>.part and renamed when complete, once its SHA-256
matches the one the server recorded at upload. Running the command again
resumes a .part file where it stopped (only when it is the start of the same
file: <file>.part.etag says which), and skips files already there with the
right content; any other file in the way is replaced. Files uploaded before
servers recorded hashes are always downloaded whole. A progress bar is drawn
when the output is a terminal; otherwise a line is printed per file.`,
		Args: exactArgs("RUN"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.artifactsDownload(cmd.Context(), args[0], out)
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "the directory to download into (default: the current one)")
	return cmd
}

func (e *Env) artifactsDownload(ctx context.Context, name, out string) error {
	c, err := e.client()
	if err != nil {
		return err
	}
	files, err := c.ArtifactList(ctx, name)
	if err != nil {
		return c.runErr(name, err)
	}
	if len(files) == 0 {
		fmt.Fprintf(e.Stderr, "Run %s has no artifacts (yet: a job's artifacts are uploaded when it ends).\n", name)
		return nil
	}
	dir, err := e.projectDir(out)
	if err != nil {
		return err
	}
	tty := e.IsTerminal(e.Stdout)
	var total int64
	for _, f := range files {
		rel, err := artifactRelPath(f)
		if err != nil {
			return err
		}
		if err := e.downloadFile(ctx, c, f, rel, filepath.Join(dir, rel), tty); err != nil {
			return err
		}
		total += f.Size
	}
	fmt.Fprintf(e.Stderr, "Downloaded %d files (%s) of run %s to %s\n", len(files), formatBytes(total), name, dir)
	return nil
}

// artifactRelPath is where a file lands under the output directory,
// <workflow>/<path>. The server's paths are checked: none may leave it, nor
// carry control characters (written raw, they would play tricks on the
// user's terminal and tools) or names longer than file systems hold.
func artifactRelPath(f api.ArtifactFile) (string, error) {
	p := filepath.FromSlash(f.Path)
	if f.Workflow == "" || strings.ContainsAny(f.Workflow, `/\`) || !filepath.IsLocal(f.Workflow) || !filepath.IsLocal(p) {
		return "", fmt.Errorf("the server listed an artifact with an unsafe path, %q of workflow %q; it was not downloaded", f.Path, f.Workflow)
	}
	if err := api.CheckArtifactPath(f.Workflow + "/" + f.Path); err != nil {
		return "", fmt.Errorf("the server listed an artifact of workflow %q with an unsafe path: %w; it was not downloaded", f.Workflow, err)
	}
	return filepath.Join(f.Workflow, p), nil
}

// downloadFile downloads one file to dest through dest.part, resuming a
// .part file left by an earlier attempt at the same file.
//
// A file already at dest is kept only when its SHA-256 is the listed one; a
// file listed without a hash (uploaded before servers recorded them) is
// always downloaded. dest.part.etag holds the entity tag of the file the
// .part file is the start of: a resume sends it as If-Range, so that the
// server sends the whole file instead of the rest of another one (the .part
// of another run's file of the same name). A .part without it is not
// resumed. Every file received is checked against its listed hash.
func (e *Env) downloadFile(ctx context.Context, c *apiClient, f api.ArtifactFile, rel, dest string, tty bool) error {
	fail := func(err error) error { return fmt.Errorf("download %s: %w", rel, err) }
	if fi, err := os.Stat(dest); err == nil && fi.Mode().IsRegular() && fi.Size() == f.Size && f.SHA256 != "" {
		sum, err := fileSHA256(dest)
		if err != nil {
			return fail(err)
		}
		if sum == f.SHA256 {
			if !tty {
				fmt.Fprintf(e.Stdout, "%s  %s  already downloaded\n", rel, formatBytes(f.Size))
			}
			return nil
		}
	}
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		return fail(err)
	}
	part, tag := sidePath(dest, ".part"), sidePath(dest, ".part.etag")
	pf, err := os.OpenFile(part, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fail(err)
	}
	defer pf.Close()
	offset, err := pf.Seek(0, io.SeekEnd)
	if err != nil {
		return fail(err)
	}
	etag, err := os.ReadFile(tag)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fail(err)
	}
	req := client.ArtifactRequest{Offset: offset, IfRange: strings.TrimSpace(string(etag))}
	if req.IfRange == "" || offset >= f.Size {
		// Not known to be the start of this file: start over.
		req = client.ArtifactRequest{}
	}
	a, err := c.ArtifactGet(ctx, f.JobID, f.Path, req)
	if err != nil {
		return fail(c.explain(err))
	}
	defer a.Body.Close()
	offset = a.Offset
	if offset == 0 {
		// The whole file comes: the .part file starts over, tagged with
		// the file it is the start of.
		if _, err := restart(pf); err != nil {
			return fail(err)
		}
		if err := writeTag(tag, a.ETag); err != nil {
			return fail(err)
		}
	} else if _, err := pf.Seek(offset, io.SeekStart); err != nil {
		return fail(err)
	}
	var w io.Writer = pf
	if tty {
		bar := progressbar.NewOptions64(f.Size,
			progressbar.OptionSetWriter(e.Stdout),
			progressbar.OptionSetDescription(rel),
			progressbar.OptionShowBytes(true),
			progressbar.OptionShowTotalBytes(true),
			progressbar.OptionUseIECUnits(true),
			progressbar.OptionSetWidth(20),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionShowCount(),
			progressbar.OptionFullWidth(),
			progressbar.OptionOnCompletion(func() { fmt.Fprintln(e.Stdout) }),
		)
		_ = bar.Set64(offset)
		w = io.MultiWriter(pf, bar)
	}
	// Copy at most what remains, so a server sending more cannot grow the
	// file past its listed size.
	if _, err := io.Copy(w, io.LimitReader(a.Body, f.Size-offset)); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("download %s: %w; run the command again to resume", rel, err)
	}
	size, err := pf.Seek(0, io.SeekCurrent)
	if err != nil {
		return fail(err)
	}
	if size != f.Size {
		return fmt.Errorf("download %s: the server sent %s of %s; run the command again to resume", rel, formatBytes(size), formatBytes(f.Size))
	}
	if err := pf.Close(); err != nil {
		return fail(err)
	}
	if f.SHA256 != "" {
		sum, err := fileSHA256(part)
		if err != nil {
			return fail(err)
		}
		if sum != f.SHA256 {
			_ = os.Remove(part)
			_ = os.Remove(tag)
			return fmt.Errorf("download %s: the file received has SHA-256 %s, but the server listed %s; it was removed: run the command again (the artifact may have been uploaded again meanwhile)", rel, sum, f.SHA256)
		}
	}
	if err := os.Rename(part, dest); err != nil {
		if errors.Is(err, fs.ErrExist) {
			err = fmt.Errorf("%s is in the way: remove it and run the command again", dest)
		}
		return fail(err)
	}
	if err := os.Remove(tag); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fail(err)
	}
	if !tty {
		note := ""
		if offset > 0 {
			note = fmt.Sprintf(" (resumed at %s)", formatBytes(offset))
		}
		fmt.Fprintf(e.Stdout, "%s  %s%s\n", rel, formatBytes(f.Size), note)
	}
	return nil
}

// sidePath is dest with suffix, a file kept beside dest while it downloads
// (dest.part, dest.part.etag), or, when that name would be longer than file
// systems allow, a hidden name made of dest's hash and suffix.
func sidePath(dest, suffix string) string {
	if len(filepath.Base(dest))+len(suffix) <= api.MaxArtifactNameBytes {
		return dest + suffix
	}
	sum := sha256.Sum256([]byte(filepath.Base(dest)))
	return filepath.Join(filepath.Dir(dest), "."+hex.EncodeToString(sum[:16])+suffix)
}

// writeTag records the entity tag of the file a .part file is the start
// of; without one (a file the server has no hash of) there is none, and
// the .part file will not be resumed.
func writeTag(name, etag string) error {
	if etag == "" {
		if err := os.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	}
	return os.WriteFile(name, []byte(etag+"\n"), 0o644)
}

// fileSHA256 is the hex SHA-256 of a file's content.
func fileSHA256(name string) (string, error) {
	f, err := os.Open(name)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read %s: %w", name, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// restart empties a .part file.
func restart(f *os.File) (int64, error) {
	if err := f.Truncate(0); err != nil {
		return 0, err
	}
	return f.Seek(0, io.SeekStart)
}
