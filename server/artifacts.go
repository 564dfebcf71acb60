package server

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/blob"
	"github.com/dstackai/dstack/store"
)

func artifactPrefix(jobID string) string { return "artifacts/" + jobID + "/" }

func artifactPath(r *http.Request) (string, error) {
	p := r.PathValue("path")
	if !blob.ValidKey(p) {
		return "", invalid("artifact path %q must be a clean relative path", p)
	}
	return p, nil
}

func (s *Server) handleArtifactUpload(w http.ResponseWriter, r *http.Request, rn *store.Runner) error {
	job, err := s.runnerJob(r, rn)
	if err != nil {
		return err
	}
	p, err := uploadPath(r)
	if err != nil {
		return err
	}
	body := io.Reader(r.Body)
	size := max(r.ContentLength, 0)
	if v := r.Header.Get("X-Dstack-Size"); v != "" {
		want, err := strconv.ParseInt(v, 10, 64)
		if err != nil || want < 0 {
			return invalid("X-Dstack-Size %q is not a size in bytes", v)
		}
		// Checked while storing, so that a body of another length fails the
		// Put and leaves nothing (or the previous upload) behind.
		body = &sizedReader{r: r.Body, want: want}
		size = want
	}
	if err := s.checkQuotaOf(r.Context(), job.UserID, size); err != nil {
		return err
	}
	st, err := s.jobBlobs(r.Context(), job)
	if err != nil {
		return err
	}
	if err := checkArtifactTree(r.Context(), st, artifactPrefix(job.ID), p); err != nil {
		return err
	}
	if err := s.putArtifact(r.Context(), st, job.ID, p, body); err != nil {
		var se *sizeError
		if errors.As(err, &se) {
			return invalid("artifact %s: %v; nothing was stored", p, se)
		}
		return artifactPutError(p, err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// sizedReader fails when its reader yields more or fewer than want bytes.
type sizedReader struct {
	r         io.Reader
	want, got int64
}

type sizeError struct {
	got, want int64
	more      bool
}

func (e *sizeError) Error() string {
	if e.more {
		return fmt.Sprintf("received more than the %d bytes expected", e.want)
	}
	return fmt.Sprintf("received %d bytes, expected %d", e.got, e.want)
}

func (s *sizedReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	s.got += int64(n)
	if s.got > s.want {
		return n, &sizeError{got: s.got, want: s.want, more: true}
	}
	if errors.Is(err, io.EOF) && s.got != s.want {
		return n, &sizeError{got: s.got, want: s.want}
	}
	return n, err
}

// jobArtifacts lists a job's artifact files.
func (s *Server) jobArtifacts(r *http.Request, j *store.Job) ([]api.ArtifactFile, error) {
	st, err := s.jobBlobs(r.Context(), j)
	if err != nil {
		return nil, err
	}
	objs, err := st.List(r.Context(), artifactPrefix(j.ID))
	if err != nil {
		return nil, fmt.Errorf("list artifacts: %w", err)
	}
	hashes, err := s.artifactHashes(r.Context(), j.ID)
	if err != nil {
		return nil, err
	}
	out := make([]api.ArtifactFile, 0, len(objs))
	for _, o := range objs {
		p := strings.TrimPrefix(o.Key, artifactPrefix(j.ID))
		out = append(out, api.ArtifactFile{Workflow: j.Workflow, JobID: j.ID, Path: p, Size: o.Size, SHA256: hashes.of(p, o.Size)})
	}
	return out, nil
}

func (s *Server) handleArtifactList(w http.ResponseWriter, r *http.Request, u *store.User) error {
	run, err := s.userRun(r, u)
	if err != nil {
		return err
	}
	out := []api.ArtifactFile{}
	for _, j := range run.Jobs {
		fs, err := s.jobArtifacts(r, j)
		if err != nil {
			return err
		}
		out = append(out, fs...)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) handleArtifactDownload(w http.ResponseWriter, r *http.Request, u *store.User) error {
	job, err := s.userJob(r, u)
	if err != nil {
		return err
	}
	return s.serveArtifact(w, r, job)
}

// serveArtifact sends one artifact file of job, honouring `Range: bytes=N-`.
func (s *Server) serveArtifact(w http.ResponseWriter, r *http.Request, job *store.Job) error {
	p, err := artifactPath(r)
	if err != nil {
		return err
	}
	jobID := job.ID
	blobs, err := s.jobBlobs(r.Context(), job)
	if err != nil {
		return err
	}
	var offset int64
	if rg := r.Header.Get("Range"); rg != "" {
		v, ok := strings.CutPrefix(rg, "bytes=")
		v, ok2 := strings.CutSuffix(v, "-")
		if offset, err = strconv.ParseInt(v, 10, 64); !ok || !ok2 || err != nil || offset < 0 {
			return api.Errorf(http.StatusRequestedRangeNotSatisfiable, api.CodeInvalid, "only `Range: bytes=N-` is supported")
		}
	}
	obj, err := blobs.Stat(r.Context(), artifactPrefix(jobID)+p)
	if errors.Is(err, blob.ErrNotFound) {
		return notFound("no artifact %s", p)
	}
	if err != nil {
		return err
	}
	hashes, err := s.artifactHashes(r.Context(), jobID)
	if err != nil {
		return err
	}
	etag := artifactETag(hashes.of(p, obj.Size))
	if etag != "" {
		w.Header().Set("ETag", etag)
	}
	if offset > 0 && !ifRangeMatches(r, etag) {
		// The client's partial copy is of another file: send this one whole.
		offset = 0
	}
	if offset > obj.Size {
		return api.Errorf(http.StatusRequestedRangeNotSatisfiable, api.CodeInvalid, "offset %d is past the end of %s (%d bytes)", offset, p, obj.Size)
	}
	rc, n, err := blobs.Open(r.Context(), artifactPrefix(jobID)+p, offset)
	if err != nil {
		return err
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
	w.Header().Set("Accept-Ranges", "bytes")
	if offset > 0 {
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", offset, obj.Size-1, obj.Size))
		w.WriteHeader(http.StatusPartialContent)
	}
	return copyBody(w, rc)
}

// copyBody streams a response body. Once the status is sent a failed copy
// can only cut the body short, which the client sees by its length.
func copyBody(w io.Writer, r io.Reader) error {
	_, _ = io.Copy(w, r)
	return nil
}

// depJob is one dependency of a job: a job of its run, or of the earlier
// run a tag named when the run was submitted (tag set).
type depJob struct {
	job *store.Job
	tag string
}

// depJobs returns the jobs a job depends on: those of its run it names, and
// the jobs its tagged dependencies were resolved to. A runner reaches only
// its own user's jobs: a tagged dependency that is not a done job of the
// job's user is refused as if it did not exist.
func (s *Server) depJobs(r *http.Request, job *store.Job) ([]depJob, error) {
	var out []depJob
	if len(job.Spec.DependsOn) > 0 {
		run, err := s.store.RunGet(r.Context(), store.RunGetParams{Name: job.RunName})
		if err != nil {
			return nil, fmt.Errorf("load run: %w", err)
		}
		for _, j := range run.Jobs {
			if slices.Contains(job.Spec.DependsOn, j.Workflow) {
				out = append(out, depJob{job: j})
			}
		}
	}
	for _, d := range job.Spec.DependsOnTags {
		dj, err := s.store.JobGet(r.Context(), d.JobID)
		if errors.Is(err, store.ErrNotFound) || (err == nil && (dj.UserID != job.UserID || dj.Status != api.StatusDone || dj.Workflow != d.Workflow)) {
			return nil, notFound("job %s: its dependency %s is not a done job of its user", job.ID, d)
		}
		if err != nil {
			return nil, fmt.Errorf("load dependency %s: %w", d, err)
		}
		out = append(out, depJob{job: dj, tag: d.Tag})
	}
	return out, nil
}

func (s *Server) handleDependencies(w http.ResponseWriter, r *http.Request, rn *store.Runner) error {
	job, err := s.runnerJob(r, rn)
	if err != nil {
		return err
	}
	deps, err := s.depJobs(r, job)
	if err != nil {
		return err
	}
	out := []api.Dependency{}
	for _, d := range deps {
		fs, err := s.jobArtifacts(r, d.job)
		if err != nil {
			return err
		}
		out = append(out, api.Dependency{Workflow: d.job.Workflow, JobID: d.job.ID, RunName: d.job.RunName, Tag: d.tag, Files: fs})
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) handleDependencyArtifact(w http.ResponseWriter, r *http.Request, rn *store.Runner) error {
	job, err := s.runnerJob(r, rn)
	if err != nil {
		return err
	}
	deps, err := s.depJobs(r, job)
	if err != nil {
		return err
	}
	dep := r.PathValue("dep")
	for _, d := range deps {
		if d.job.ID == dep {
			return s.serveArtifact(w, r, d.job)
		}
	}
	return notFound("job %s is not a dependency of job %s", dep, job.ID)
}
