package runner

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/client"
)

// This file carries a job's checkpoints (workflow key checkpoints:) across
// its attempts. While the job's commands run, a goroutine of its own syncs
// the checkpoint paths to the server every CheckpointInterval; the job's
// process is never waited for. A sync is incremental and content-addressed:
//
//  1. list the regular files under the paths, through the job's jobdir.Dir
//     (a link that leads out is not followed);
//  2. look at each file twice, CheckpointSettle apart: a file whose size or
//     modification time changed in between is being written, and is left
//     for a later sync (the version an earlier sync took stays listed);
//  3. hash the stable files whose size and modification time differ from
//     what the last sync hashed (unchanged files are not read again);
//  4. ask the server which contents it lacks, and upload only those; the
//     server checks each against its hash, so a file changed since it was
//     hashed is refused and left for a later sync;
//  5. send the manifest, last: only then is the checkpoint complete.
//
// One more sync runs at once on a spot interruption notice, and a final
// one once the commands end for any reason but success (a stop, the notice,
// the runner's shutdown, a failure), or after success when the workflow
// keeps its checkpoints. An abort syncs nothing.
//
// Before a later attempt's commands start, restore places the job's latest
// complete checkpoint in the working directory, through the jobdir.Dir.

// fileState is what a sync knows of one file.
type fileState struct {
	size  int64
	mtime time.Time
	mode  fs.FileMode
	sum   string // the hex SHA-256 of the content at size and mtime
}

func (a fileState) same(b fileState) bool { return a.size == b.size && a.mtime.Equal(b.mtime) }

// checkpointer syncs one job's checkpoints.
type checkpointer struct {
	j      *job
	settle time.Duration

	mu sync.Mutex // one sync at a time; guards the fields below
	// hashed is what the last look hashed, by path.
	hashed map[string]fileState
	// listed is the manifest of the last checkpoint the server recorded.
	listed map[string]api.CheckpointFile
	// stored is the contents the server is known to hold.
	stored map[string]bool
	last   *api.Checkpoint

	now chan struct{} // asks the loop for a sync at once
	// betweenLooks, when set, runs between a sync's two looks (tests).
	betweenLooks func()
}

func newCheckpointer(j *job) *checkpointer {
	return &checkpointer{
		j: j, settle: j.r.cfg.CheckpointSettle,
		hashed: map[string]fileState{}, listed: map[string]api.CheckpointFile{}, stored: map[string]bool{},
		now: make(chan struct{}, 1),
	}
}

// interval is how often the job's checkpoints are synced.
func (c *checkpointer) interval() time.Duration {
	if d := time.Duration(c.j.spec.CheckpointInterval); d > 0 {
		return d
	}
	return 5 * time.Minute
}

// loop syncs every interval until ctx ends, and at once when asked.
func (c *checkpointer) loop(ctx context.Context) {
	t := time.NewTicker(c.interval())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-c.now:
		}
		if _, err := c.sync(ctx, false); err != nil && ctx.Err() == nil {
			c.j.log.Warn("checkpoint sync failed; the next one retries", "err", err)
		}
	}
}

// syncNow asks the loop for a sync at once.
func (c *checkpointer) syncNow() {
	select {
	case c.now <- struct{}{}:
	default:
	}
}

// look stats one file through the job's directory.
func (c *checkpointer) look(name string) (fileState, error) {
	f, err := c.j.dir.Open(name)
	if err != nil {
		return fileState{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fileState{}, err
	}
	if !st.Mode().IsRegular() {
		return fileState{}, fmt.Errorf("%s is not a regular file", name)
	}
	return fileState{size: st.Size(), mtime: st.ModTime(), mode: st.Mode().Perm()}, nil
}

// hash reads a file and returns its state with its hash, or an error when
// it changed while it was read.
func (c *checkpointer) hash(name string, want fileState) (fileState, error) {
	f, err := c.j.dir.Open(name)
	if err != nil {
		return fileState{}, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return fileState{}, err
	}
	st, err := f.Stat()
	if err != nil {
		return fileState{}, err
	}
	got := fileState{size: st.Size(), mtime: st.ModTime(), mode: st.Mode().Perm()}
	if n != got.size || !got.same(want) {
		return fileState{}, errUnstable
	}
	got.sum = hex.EncodeToString(h.Sum(nil))
	return got, nil
}

var errUnstable = errors.New("the file changed while it was read")

// syncResult says what one sync did.
type syncResult struct {
	checkpoint *api.Checkpoint
	files      int
	sent       int64 // bytes uploaded
	deferred   int   // files left for a later sync, being written
	unchanged  bool  // nothing changed since the last checkpoint: none made
}

// sync makes one checkpoint. final skips the settle wait: the job's commands
// have ended, nothing writes any more.
func (c *checkpointer) sync(ctx context.Context, final bool) (*syncResult, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	res := &syncResult{}
	names, err := c.list()
	if err != nil {
		return nil, err
	}
	first := make(map[string]fileState, len(names))
	for _, n := range names {
		if st, err := c.look(n); err == nil {
			first[n] = st
		}
	}
	if !final && c.settle > 0 && len(first) > 0 {
		t := time.NewTimer(c.settle)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
	if c.betweenLooks != nil {
		c.betweenLooks()
	}
	manifest := map[string]api.CheckpointFile{}
	keepOld := func(n string) {
		if old, ok := c.listed[n]; ok {
			manifest[n] = old
		}
		res.deferred++
	}
	for _, n := range names {
		st1, ok := first[n]
		if !ok {
			continue // gone, or not a regular file any more
		}
		st2, err := c.look(n)
		if err != nil {
			continue
		}
		if !st1.same(st2) {
			keepOld(n)
			continue
		}
		if h, ok := c.hashed[n]; ok && h.same(st2) {
			st2.sum = h.sum
		} else {
			if st2, err = c.hash(n, st2); err != nil {
				if errors.Is(err, errUnstable) {
					keepOld(n)
					continue
				}
				return nil, fmt.Errorf("read %s: %w", n, err)
			}
			c.hashed[n] = st2
		}
		manifest[n] = api.CheckpointFile{Path: n, Size: st2.size, SHA256: st2.sum, Mode: uint32(st2.mode)}
	}
	for n := range c.hashed {
		if _, ok := manifest[n]; !ok {
			delete(c.hashed, n)
		}
	}
	if c.last != nil && sameManifest(manifest, c.listed) {
		res.unchanged, res.checkpoint, res.files = true, c.last, len(manifest)
		return res, nil
	}
	if len(manifest) == 0 && c.last == nil {
		res.unchanged = true
		return res, nil // nothing written yet
	}
	var sums []string
	for _, f := range manifest {
		if !c.stored[f.SHA256] && !slicesContains(sums, f.SHA256) {
			sums = append(sums, f.SHA256)
		}
	}
	sort.Strings(sums)
	var missing []string
	if len(sums) > 0 {
		err = c.j.do(ctx, "list missing checkpoint contents", func(ctx context.Context, cl *client.Client) error {
			var err error
			missing, err = cl.JobCheckpointMissing(ctx, c.j.id, c.j.lease, sums)
			return err
		})
		if err != nil {
			return nil, err
		}
	}
	miss := map[string]bool{}
	for _, s := range missing {
		miss[s] = true
	}
	for _, s := range sums {
		if !miss[s] {
			c.stored[s] = true
		}
	}
	// Each missing content is uploaded from a file that has it.
	for _, f := range sortedFiles(manifest) {
		if !miss[f.SHA256] {
			continue
		}
		delete(miss, f.SHA256)
		err := c.upload(ctx, f)
		var ae *api.Error
		if errors.As(err, &ae) && ae.Code == api.CodeInvalid {
			// Changed since it was hashed: the server refused it. Every
			// file listed with that content waits for a later sync.
			for _, g := range sortedFiles(manifest) {
				if g.SHA256 != f.SHA256 {
					continue
				}
				delete(c.hashed, g.Path)
				delete(manifest, g.Path)
				keepOld(g.Path)
				if old, ok := manifest[g.Path]; ok && !c.stored[old.SHA256] {
					delete(manifest, g.Path)
				}
			}
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("upload checkpoint file %s: %w", f.Path, err)
		}
		c.stored[f.SHA256] = true
		res.sent += f.Size
	}
	m := api.CheckpointManifest{Files: sortedFiles(manifest)}
	var cp *api.Checkpoint
	err = c.j.do(ctx, "record checkpoint", func(ctx context.Context, cl *client.Client) error {
		var err error
		cp, err = cl.JobCheckpointCommit(ctx, c.j.id, c.j.lease, m)
		if client.IsCode(err, api.CodeConflict) && !isLeaseLost(err) {
			// A content is gone from the server: ask again next time.
			clear(c.stored)
			return permanent(err)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	c.listed = manifest
	c.last = cp
	// The server keeps only what the latest checkpoint lists.
	kept := map[string]bool{}
	for _, f := range manifest {
		kept[f.SHA256] = true
	}
	for s := range c.stored {
		if !kept[s] {
			delete(c.stored, s)
		}
	}
	res.checkpoint, res.files = cp, len(manifest)
	c.j.log.Info("checkpoint synced", "seq", cp.Seq, "files", cp.Files, "size", cp.Size, "sent", res.sent, "deferred", res.deferred)
	return res, nil
}

func (c *checkpointer) upload(ctx context.Context, f api.CheckpointFile) error {
	return c.j.do(ctx, "upload checkpoint file", func(ctx context.Context, cl *client.Client) error {
		in, err := c.j.dir.Open(f.Path)
		if err != nil {
			return permanent(err)
		}
		defer in.Close()
		err = cl.JobCheckpointBlobUpload(ctx, c.j.id, c.j.lease, f.SHA256, io.LimitReader(in, f.Size+1), f.Size)
		if client.IsCode(err, api.CodeQuotaExceeded) || client.IsCode(err, api.CodeInvalid) {
			return permanent(err)
		}
		return err
	})
}

// list returns the regular files under the checkpoint paths.
func (c *checkpointer) list() ([]string, error) {
	files, _, _, err := collectArtifacts(c.j.dir, c.j.spec.Checkpoints)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(files))
	for i, f := range files {
		out[i] = f.rel
	}
	return out, nil
}

func sameManifest(a, b map[string]api.CheckpointFile) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w.SHA256 != v.SHA256 || w.Mode != v.Mode {
			return false
		}
	}
	return true
}

func sortedFiles(m map[string]api.CheckpointFile) []api.CheckpointFile {
	out := make([]api.CheckpointFile, 0, len(m))
	for _, f := range m {
		out = append(out, f)
	}
	sort.Slice(out, func(i, k int) bool { return out[i].Path < out[k].Path })
	return out
}

func slicesContains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// restore places the job's latest complete checkpoint in its working
// directory and returns it; nil when the job has none.
func (c *checkpointer) restore(ctx context.Context) (*api.Checkpoint, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var cp *api.Checkpoint
	err := c.j.do(ctx, "read the checkpoint", func(ctx context.Context, cl *client.Client) error {
		var err error
		cp, err = cl.JobCheckpoint(ctx, c.j.id, c.j.lease)
		if client.IsCode(err, api.CodeNotFound) && !isLeaseLost(err) {
			return permanent(err)
		}
		return err
	})
	if client.IsCode(err, api.CodeNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	for _, f := range cp.Manifest {
		if err := c.restoreFile(ctx, f); err != nil {
			return nil, fmt.Errorf("checkpoint file %s: %w", f.Path, err)
		}
		st, err := c.look(f.Path)
		if err != nil {
			return nil, fmt.Errorf("checkpoint file %s: %w", f.Path, err)
		}
		st.sum = f.SHA256
		c.hashed[f.Path] = st
		c.listed[f.Path] = f
		c.stored[f.SHA256] = true
	}
	c.last = cp
	return cp, nil
}

func (c *checkpointer) restoreFile(ctx context.Context, f api.CheckpointFile) error {
	mode := fs.FileMode(f.Mode).Perm()
	if mode == 0 {
		mode = 0o644
	}
	return c.j.do(ctx, "download checkpoint file", func(ctx context.Context, cl *client.Client) error {
		rc, err := cl.JobCheckpointBlob(ctx, c.j.id, c.j.lease, f.SHA256)
		if err != nil {
			return err
		}
		defer rc.Close()
		h := sha256.New()
		in := &readTracker{r: io.TeeReader(rc, h)}
		n, err := c.j.dir.WriteFile(f.Path, in, mode)
		switch {
		case err != nil && in.err != nil && errors.Is(err, in.err):
			return err // the stream broke: retry
		case err != nil:
			return permanent(err) // refused (a link that leads out), or the disk's failure
		case n != f.Size:
			return fmt.Errorf("got %d bytes of %d", n, f.Size)
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != f.SHA256 {
			return permanent(fmt.Errorf("its content does not match its SHA-256 (got %s, want %s): the stored checkpoint is damaged", got, f.SHA256))
		}
		// The file's mode as saved, whatever the umask.
		if err := c.j.dir.Root().Chmod(f.Path, mode); err != nil && !errors.Is(err, os.ErrNotExist) {
			return permanent(err)
		}
		return nil
	})
}
