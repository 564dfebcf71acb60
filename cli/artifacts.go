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
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "list RUN [--json]",
		Aliases: []string{"ls"},
		Short:   "List a run's artifact files",
		Args:    exactArgs("RUN"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.artifactsList(cmd.Context(), args[0], asJSON)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON array of files")
	return cmd
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
	t := newTable(e.Stdout, "workflow", "path", "size")
	for _, f := range files {
		t.row(f.Workflow, f.Path, formatBytes(f.Size))
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

A file is written to <file>.part and renamed when complete; running the
command again resumes a .part file where it stopped, and skips files already
there with the right size. A progress bar is drawn when the output is a
terminal; otherwise a line is printed per file.`,
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
// .part file left by an earlier attempt.
func (e *Env) downloadFile(ctx context.Context, c *apiClient, f api.ArtifactFile, rel, dest string, tty bool) error {
	if fi, err := os.Stat(dest); err == nil && fi.Mode().IsRegular() && fi.Size() == f.Size {
		if !tty {
			fmt.Fprintf(e.Stdout, "%s  %s  already downloaded\n", rel, formatBytes(f.Size))
		}
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		return fmt.Errorf("download %s: %w", rel, err)
	}
	part := partPath(dest)
	pf, err := os.OpenFile(part, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("download %s: %w", rel, err)
	}
	defer pf.Close()
	offset, err := pf.Seek(0, io.SeekEnd)
	if err != nil {
		return fmt.Errorf("download %s: %w", rel, err)
	}
	if offset > f.Size {
		// Not a prefix of this file: start over.
		if offset, err = restart(pf); err != nil {
			return fmt.Errorf("download %s: %w", rel, err)
		}
	}
	resumed := offset
	if offset < f.Size {
		body, n, err := c.ArtifactDownload(ctx, f.JobID, f.Path, offset)
		if err != nil {
			return fmt.Errorf("download %s: %w", rel, c.explain(err))
		}
		defer body.Close()
		if offset > 0 && n == f.Size {
			// The server sent the whole file, not the rest of it.
			if offset, err = restart(pf); err != nil {
				return fmt.Errorf("download %s: %w", rel, err)
			}
			resumed = 0
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
		// Copy at most what remains, so a server sending more cannot grow
		// the file past its listed size.
		if _, err := io.Copy(w, io.LimitReader(body, f.Size-offset)); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("download %s: %w; run the command again to resume", rel, err)
		}
	}
	size, err := pf.Seek(0, io.SeekCurrent)
	if err != nil {
		return fmt.Errorf("download %s: %w", rel, err)
	}
	if size != f.Size {
		return fmt.Errorf("download %s: the server sent %s of %s; run the command again to resume", rel, formatBytes(size), formatBytes(f.Size))
	}
	if err := pf.Close(); err != nil {
		return fmt.Errorf("download %s: %w", rel, err)
	}
	if err := os.Rename(part, dest); err != nil {
		if errors.Is(err, fs.ErrExist) {
			err = fmt.Errorf("%s is in the way: remove it and run the command again", dest)
		}
		return fmt.Errorf("download %s: %w", rel, err)
	}
	if !tty {
		note := ""
		if resumed > 0 {
			note = fmt.Sprintf(" (resumed at %s)", formatBytes(resumed))
		}
		fmt.Fprintf(e.Stdout, "%s  %s%s\n", rel, formatBytes(f.Size), note)
	}
	return nil
}

// partPath is where dest is downloaded to before it is complete:
// dest.part, or, when that name would be longer than file systems allow
// (dest's is 251 to 255 bytes), a hidden name made of its hash.
func partPath(dest string) string {
	if len(filepath.Base(dest))+len(".part") <= api.MaxArtifactNameBytes {
		return dest + ".part"
	}
	sum := sha256.Sum256([]byte(filepath.Base(dest)))
	return filepath.Join(filepath.Dir(dest), "."+hex.EncodeToString(sum[:16])+".part")
}

// restart empties a .part file.
func restart(f *os.File) (int64, error) {
	if err := f.Truncate(0); err != nil {
		return 0, err
	}
	return f.Seek(0, io.SeekStart)
}
