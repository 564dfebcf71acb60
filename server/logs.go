package server

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/logstore"
	"github.com/dstackai/dstack/store"
)

// maxLogChunk bounds one log upload.
const maxLogChunk = 8 << 20

func (s *Server) handleJobLogAppend(w http.ResponseWriter, r *http.Request, rn *store.Runner) error {
	offset, err := strconv.ParseInt(r.URL.Query().Get("offset"), 10, 64)
	if err != nil || offset < 0 {
		return invalid("offset must be the byte offset of the chunk in the job's log")
	}
	job, err := s.runnerJob(r, rn)
	if err != nil {
		return err
	}
	data, err := io.ReadAll(io.LimitReader(r.Body, maxLogChunk+1))
	if err != nil {
		return invalid("log upload broke off: %v", err)
	}
	if len(data) > maxLogChunk {
		return api.Errorf(http.StatusRequestEntityTooLarge, api.CodeTooLarge, "log chunk over %d MiB: send smaller chunks", maxLogChunk>>20)
	}
	size, err := s.logs.Append(job.ID, offset, data, s.cfg.Now())
	var gap *logstore.GapError
	if errors.As(err, &gap) {
		return api.Errorf(http.StatusConflict, api.CodeConflict, "%s", gap.Error())
	}
	if err != nil {
		return fmt.Errorf("append log: %w", err)
	}
	s.metrics.logBytes.Add(float64(len(data)))
	writeJSON(w, http.StatusOK, api.LogAppendResponse{Size: size})
	return nil
}

// userJob loads a job of the user's.
func (s *Server) userJob(r *http.Request, u *store.User) (*store.Job, error) {
	id := r.PathValue("id")
	job, err := s.store.JobGet(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) || (err == nil && job.UserID != u.ID) {
		return nil, notFound("no job %s", id)
	}
	return job, err
}

// handleJobLogs streams a job's output as text, following it until the job
// ends when asked.
func (s *Server) handleJobLogs(w http.ResponseWriter, r *http.Request, u *store.User) error {
	job, err := s.userJob(r, u)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	o := logstore.ReadOptions{Follow: q.Get("follow") == "true" && !job.Status.Finished()}
	if v := q.Get("since"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return invalid("since %q is not an RFC 3339 time", v)
		}
		o.Since = t
	}
	if v := q.Get("offset"); v != "" {
		if o.Offset, err = strconv.ParseInt(v, 10, 64); err != nil || o.Offset < 0 {
			return invalid("offset %q is not a byte offset", v)
		}
	}
	ctx := r.Context()
	o.Finished = func() bool {
		j, err := s.store.JobGet(ctx, job.ID)
		return err != nil || j.Status.Finished()
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	fw := flushWriter{w: w, f: http.NewResponseController(w)}
	o.Flush = fw.Flush
	fw.Flush()
	if err := s.logs.Copy(ctx, job.ID, fw, o); err != nil && ctx.Err() == nil {
		s.log.Warn("stream logs", "job", job.ID, "err", err)
	}
	return nil
}
