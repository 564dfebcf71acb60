package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/blob"
	"github.com/dstackai/dstack/store"
)

// Checkpoints (workflow key checkpoints:) are the state a job saves while it
// runs, carried to its next attempt. The runner stores each file's content
// once, by its SHA-256, under the job's checkpoint prefix of its artifact
// store, and then sends the manifest. The server records the manifest only
// when every content it lists is stored: a sync cut short (the runner or the
// server gone mid-upload) leaves the previous checkpoint as the latest. Once
// recorded, the contents no manifest lists any more are removed.
//
//	checkpoints/JOB/blobs/SHA256    a file's content
//
// A job's checkpoint is deleted when the job is done, unless its workflow
// says keep-checkpoints; with the run otherwise.

func checkpointPrefix(jobID string) string { return "checkpoints/" + jobID + "/" }

func checkpointBlobKey(jobID, sum string) string { return checkpointPrefix(jobID) + "blobs/" + sum }

// checkpointRunnerJob is runnerJob for a job whose workflow has checkpoints.
func (s *Server) checkpointRunnerJob(r *http.Request, rn *store.Runner) (*store.Job, error) {
	job, err := s.runnerJob(r, rn)
	if err != nil {
		return nil, err
	}
	if len(job.Spec.Checkpoints) == 0 {
		return nil, invalid("job %s has no checkpoints: its workflow lists no checkpoints: paths", job.ID)
	}
	return job, nil
}

func pathSum(r *http.Request) (string, error) {
	sum := r.PathValue("sha256")
	if !api.ValidSHA256(sum) {
		return "", invalid("%q is not a hex SHA-256 in lower case", sum)
	}
	return sum, nil
}

// storedBlobs lists the contents stored for a job's checkpoints, with their
// sizes.
func storedBlobs(ctx context.Context, st blob.Store, jobID string) (map[string]int64, error) {
	objs, err := st.List(ctx, checkpointPrefix(jobID)+"blobs/")
	if err != nil {
		return nil, fmt.Errorf("list checkpoint contents: %w", err)
	}
	out := make(map[string]int64, len(objs))
	for _, o := range objs {
		out[path.Base(o.Key)] = o.Size
	}
	return out, nil
}

func (s *Server) handleCheckpointMissing(w http.ResponseWriter, r *http.Request, rn *store.Runner) error {
	job, err := s.checkpointRunnerJob(r, rn)
	if err != nil {
		return err
	}
	var req api.CheckpointMissingRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	if len(req.SHA256) > api.MaxCheckpointFiles {
		return invalid("%d contents asked for, more than %d", len(req.SHA256), api.MaxCheckpointFiles)
	}
	st, err := s.jobBlobs(r.Context(), job)
	if err != nil {
		return err
	}
	have, err := storedBlobs(r.Context(), st, job.ID)
	if err != nil {
		return err
	}
	out := api.CheckpointMissingResponse{Missing: []string{}}
	for _, sum := range req.SHA256 {
		if !api.ValidSHA256(sum) {
			return invalid("%q is not a hex SHA-256 in lower case", sum)
		}
		if _, ok := have[sum]; !ok && !slices.Contains(out.Missing, sum) {
			out.Missing = append(out.Missing, sum)
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// hashReader fails at the end of its reader when the content's SHA-256 is
// not want, so that a Put of it stores nothing.
type hashReader struct {
	r    io.Reader
	want string
	h    hashState
}

type hashState interface {
	io.Writer
	Sum([]byte) []byte
}

func (h *hashReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	_, _ = h.h.Write(p[:n])
	if errors.Is(err, io.EOF) {
		if got := hex.EncodeToString(h.h.Sum(nil)); got != h.want {
			return n, &hashError{got: got, want: h.want}
		}
	}
	return n, err
}

// hashError is content whose SHA-256 is not the one it was sent as.
type hashError struct{ got, want string }

func (e *hashError) Error() string {
	return fmt.Sprintf("the content's SHA-256 is %s, not %s", e.got, e.want)
}

func (s *Server) handleCheckpointBlobUpload(w http.ResponseWriter, r *http.Request, rn *store.Runner) error {
	job, err := s.checkpointRunnerJob(r, rn)
	if err != nil {
		return err
	}
	sum, err := pathSum(r)
	if err != nil {
		return err
	}
	v := r.Header.Get("X-Dstack-Size")
	size, err := strconv.ParseInt(v, 10, 64)
	if err != nil || size < 0 {
		return invalid("X-Dstack-Size %q is not a size in bytes", v)
	}
	if err := s.checkQuotaOf(r.Context(), job.UserID, size); err != nil {
		return err
	}
	st, err := s.jobBlobs(r.Context(), job)
	if err != nil {
		return err
	}
	body := &hashReader{r: &sizedReader{r: r.Body, want: size}, want: sum, h: sha256.New()}
	if _, err := st.Put(r.Context(), checkpointBlobKey(job.ID, sum), body); err != nil {
		var (
			se *sizeError
			he *hashError
		)
		if errors.As(err, &se) || errors.As(err, &he) {
			return invalid("checkpoint content %s: %v; nothing was stored", sum, err)
		}
		return fmt.Errorf("store checkpoint content: %w", err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// underCheckpoints reports whether a file's path is one of the checkpoint
// paths or under one.
func underCheckpoints(p string, paths []string) bool {
	for _, c := range paths {
		if p == c || strings.HasPrefix(p, c+"/") {
			return true
		}
	}
	return false
}

func (s *Server) handleCheckpointCommit(w http.ResponseWriter, r *http.Request, rn *store.Runner) error {
	job, err := s.checkpointRunnerJob(r, rn)
	if err != nil {
		return err
	}
	var m api.CheckpointManifest
	if err := readJSON(r, &m); err != nil {
		return err
	}
	if err := m.Check(); err != nil {
		return invalid("%v", err)
	}
	for _, f := range m.Files {
		if !underCheckpoints(f.Path, job.Spec.Checkpoints) {
			return invalid("checkpoint file %q is not under the job's checkpoint paths (%s)", f.Path, strings.Join(job.Spec.Checkpoints, ", "))
		}
	}
	st, err := s.jobBlobs(r.Context(), job)
	if err != nil {
		return err
	}
	have, err := storedBlobs(r.Context(), st, job.ID)
	if err != nil {
		return err
	}
	var (
		size    int64
		counted = map[string]bool{}
		missing []string
	)
	for _, f := range m.Files {
		n, ok := have[f.SHA256]
		if !ok || n != f.Size {
			missing = append(missing, f.Path)
			continue
		}
		if !counted[f.SHA256] {
			counted[f.SHA256] = true
			size += n
		}
	}
	if len(missing) > 0 {
		return api.Errorf(http.StatusConflict, api.CodeConflict,
			"the content of %d files of the checkpoint is not stored (such as %s): upload it first; the previous checkpoint stays the latest", len(missing), missing[0])
	}
	manifest, err := json.Marshal(m)
	if err != nil {
		return err
	}
	cur, _, err := s.store.CheckpointPut(r.Context(), store.CheckpointPutParams{
		JobID: job.ID, Lease: job.Lease, Size: size, Files: len(m.Files), Manifest: manifest, Now: s.cfg.Now(),
	})
	if err != nil {
		return err
	}
	// The contents the latest checkpoint does not list go: those of the
	// previous one, and those of syncs cut short. The runner syncs one at a
	// time, so none of them is on its way into the next manifest.
	for sum := range have {
		if !counted[sum] {
			if err := st.Delete(r.Context(), checkpointBlobKey(job.ID, sum)); err != nil {
				s.log.Warn("remove a checkpoint content no longer listed; removed with the run", "job", job.ID, "sha256", sum, "err", err)
			}
		}
	}
	s.events.publish(job.UserID, api.EventRuns)
	s.log.Debug("checkpoint recorded", "job", job.ID, "seq", cur.Seq, "files", cur.Files, "size", cur.Size)
	writeJSON(w, http.StatusOK, toAPICheckpoint(cur, job.Workflow, nil))
	return nil
}

func toAPICheckpoint(c *store.Checkpoint, workflow string, files []api.CheckpointFile) *api.Checkpoint {
	return &api.Checkpoint{JobID: c.JobID, Workflow: workflow, Seq: c.Seq, Attempt: c.Attempt, CreatedAt: c.CreatedAt,
		Size: c.Size, Files: c.Files, Manifest: files}
}

// checkpointWithFiles reads a job's checkpoint with its manifest.
func (s *Server) checkpointWithFiles(ctx context.Context, job *store.Job) (*api.Checkpoint, error) {
	c, err := s.store.CheckpointGet(ctx, job.ID)
	if err != nil {
		return nil, err
	}
	var m api.CheckpointManifest
	if err := json.Unmarshal(c.Manifest, &m); err != nil {
		return nil, fmt.Errorf("checkpoint of job %s: decode manifest: %w", job.ID, err)
	}
	return toAPICheckpoint(c, job.Workflow, m.Files), nil
}

func (s *Server) handleCheckpointGet(w http.ResponseWriter, r *http.Request, rn *store.Runner) error {
	job, err := s.checkpointRunnerJob(r, rn)
	if err != nil {
		return err
	}
	c, err := s.checkpointWithFiles(r.Context(), job)
	if errors.Is(err, store.ErrNotFound) {
		return notFound("job %s has no complete checkpoint", job.ID)
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, c)
	return nil
}

func (s *Server) handleCheckpointBlob(w http.ResponseWriter, r *http.Request, rn *store.Runner) error {
	job, err := s.checkpointRunnerJob(r, rn)
	if err != nil {
		return err
	}
	sum, err := pathSum(r)
	if err != nil {
		return err
	}
	st, err := s.jobBlobs(r.Context(), job)
	if err != nil {
		return err
	}
	rc, n, err := st.Open(r.Context(), checkpointBlobKey(job.ID, sum), 0)
	if errors.Is(err, blob.ErrNotFound) {
		return notFound("job %s has no checkpoint content %s", job.ID, sum)
	}
	if err != nil {
		return err
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
	return copyBody(w, rc)
}

// handleRunCheckpoints lists the latest checkpoint of each job of a run,
// with their files.
func (s *Server) handleRunCheckpoints(w http.ResponseWriter, r *http.Request, u *store.User) error {
	run, err := s.userRun(r, u)
	if err != nil {
		return err
	}
	out := []*api.Checkpoint{}
	for _, j := range run.Jobs {
		c, err := s.checkpointWithFiles(r.Context(), j)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		out = append(out, c)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// handleRunResume runs again the jobs of a finished run that are not done,
// each from its latest checkpoint.
func (s *Server) handleRunResume(w http.ResponseWriter, r *http.Request, u *store.User) error {
	name := r.PathValue("name")
	if err := s.storage.admit(); err != nil {
		return err
	}
	if err := s.checkQuota(r.Context(), u, 0); err != nil {
		return err
	}
	p := store.RunResumeParams{Name: name, UserID: u.ID, Now: s.cfg.Now()}
	if u.Admin {
		p.UserID = "" // an admin reads and stops every user's runs, and resumes them
	}
	run, err := s.store.RunResume(r.Context(), p)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return notFound("no run %s: `dstack ps -a` lists your runs", name)
	case errors.Is(err, store.ErrRunUnfinished):
		return api.Errorf(http.StatusConflict, api.CodeConflict, "run %s has not finished: stop it first (`dstack stop %s`), or wait for it", name, name)
	case errors.Is(err, store.ErrRunDone):
		return api.Errorf(http.StatusConflict, api.CodeConflict, "every job of run %s is done: there is nothing to resume", name)
	case err != nil:
		return err
	}
	s.queue.offer(u.ID, pendingJobs(run.Jobs), false)
	s.wakeAutoscaler()
	s.events.publish(u.ID, api.EventRuns)
	s.log.Info("run resumed", "run", run.Name, "user", u.Name)
	out := []api.Run{toAPIRun(run)}
	s.attachCheckpoints(r.Context(), out, []string{run.ID})
	writeJSON(w, http.StatusOK, out[0])
	return nil
}

// attachCheckpoints sets the Checkpoint of each job of runs (whose IDs are
// runIDs) that has one. A failure to read them leaves them out: the runs
// are shown all the same.
func (s *Server) attachCheckpoints(ctx context.Context, runs []api.Run, runIDs []string) {
	cs, err := s.store.CheckpointList(ctx, store.CheckpointListParams{RunIDs: runIDs})
	if err != nil {
		s.log.Warn("read the runs' checkpoints; shown without them", "err", err)
		return
	}
	if len(cs) == 0 {
		return
	}
	byJob := make(map[string]*store.Checkpoint, len(cs))
	for _, c := range cs {
		byJob[c.JobID] = c
	}
	for i := range runs {
		jobs := runs[i].Jobs
		for k := range jobs {
			j := &jobs[k]
			if c := byJob[j.ID]; c != nil {
				j.Checkpoint = toAPICheckpoint(c, j.Workflow, nil)
			}
		}
	}
}

// dropCheckpoint deletes the checkpoint of a job that is done, unless its
// workflow keeps them. The bytes go through the trash: a failure to remove
// them now leaves them to the retention pass.
func (s *Server) dropCheckpoint(job *store.Job) {
	if len(job.Spec.Checkpoints) == 0 || job.Spec.KeepCheckpoints || job.Status != api.StatusDone {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	now := s.cfg.Now()
	d, err := s.store.CheckpointDelete(ctx, store.CheckpointDeleteParams{JobID: job.ID, Now: now, ClaimUntil: now.Add(time.Hour)})
	if errors.Is(err, store.ErrNotFound) {
		return
	}
	if err != nil {
		s.log.Warn("delete the checkpoint of a done job; it stays until the run is deleted", "job", job.ID, "err", err)
		return
	}
	freed := s.emptyTrash(ctx, d.Trash)
	s.log.Info("checkpoint deleted: the job is done", "job", job.ID, "freed", freed)
}

// Bounds of a job's checkpoint interval, as workflows are parsed.
const (
	minCheckpointInterval = time.Second
	maxCheckpointInterval = 24 * time.Hour
)

// validateCheckpoints checks a job's checkpoint settings as submitted: paths
// clean, relative, inside the working directory and not the whole of it.
func validateCheckpoints(j api.JobSpec) error {
	if len(j.Checkpoints) == 0 {
		if j.KeepCheckpoints || j.CheckpointInterval != 0 {
			return invalid("workflow %q: checkpoint settings without checkpoint paths", j.Workflow)
		}
		return nil
	}
	if len(j.Checkpoints) > 100 {
		return invalid("workflow %q: %d checkpoint paths, more than 100", j.Workflow, len(j.Checkpoints))
	}
	for _, c := range j.Checkpoints {
		if !validRelPath(c) || c != path.Clean(c) || api.CheckArtifactPath(c) != nil {
			return invalid("workflow %q: checkpoint path %q must be clean, relative and stay inside the working directory", j.Workflow, c)
		}
	}
	if d := time.Duration(j.CheckpointInterval); d < minCheckpointInterval || d > maxCheckpointInterval {
		return invalid("workflow %q: checkpoint interval %s: give one from %s to %s", j.Workflow, d, minCheckpointInterval, maxCheckpointInterval)
	}
	return nil
}
