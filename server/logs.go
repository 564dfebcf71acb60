package server

import (
	"context"
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
	job, err := s.logJob(r, rn)
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
	if job.Status.Finished() && offset+int64(len(data)) > job.LogEnd {
		// A finished job's log takes what its runner said it lacked, no more.
		data = data[:max(job.LogEnd-offset, 0)]
	}
	if len(data) > 0 {
		if err := s.checkLogQuota(r.Context(), job.UserID, int64(len(data))); err != nil {
			return err
		}
	}
	size, err := s.logs.Append(r.Context(), job.ID, offset, data, s.cfg.Now())
	var gap *logstore.GapError
	if errors.As(err, &gap) {
		return api.Errorf(http.StatusConflict, api.CodeConflict, "%s", gap.Error())
	}
	if err != nil {
		return fmt.Errorf("append log: %w", err)
	}
	s.storage.succeeded()
	s.metrics.logBytes.Add(float64(len(data)))
	s.logAppended(r.Context(), job.ID, size)
	if job.Status.Finished() {
		if err := s.logCompleted(r, job, size); err != nil {
			return err
		}
	}
	writeJSON(w, http.StatusOK, api.LogAppendResponse{Size: size})
	return nil
}

// logJob loads the job a runner sends output of: one it holds under the
// lease in the request (runnerJob), or a finished one of the runner's user
// whose log is marked incomplete under that lease, its last: the runner
// reported its end before the server could store all of it (a full disk),
// and sends the rest since, maybe after a restart under a new identity.
func (s *Server) logJob(r *http.Request, rn *store.Runner) (*store.Job, error) {
	job, err := s.runnerJob(r, rn)
	if !errors.Is(err, store.ErrLeaseLost) {
		return job, err
	}
	job, gerr := s.store.JobGet(r.Context(), r.PathValue("id"))
	if gerr != nil {
		return nil, err
	}
	lease, _ := strconv.ParseInt(r.Header.Get(api.LeaseHeader), 10, 64)
	if job.Status.Finished() && job.LogMissing > 0 && job.Lease == lease {
		return job, nil
	}
	return nil, err
}

// logCompleted records how much of a finished job's incomplete log is
// stored now; the mark goes once it is all there.
func (s *Server) logCompleted(r *http.Request, job *store.Job, size int64) error {
	j, err := s.store.JobLogStored(r.Context(), store.JobLogStoredParams{ID: job.ID, Lease: job.Lease, Size: size})
	if err != nil {
		return fmt.Errorf("record the log of job %s: %w", job.ID, err)
	}
	if j.LogMissing == 0 {
		s.log.Info("the log of a finished job is complete", "job", j.ID, "run", j.RunName, "size", size)
		s.finishLog(j.ID)
		s.events.publish(j.UserID, api.EventRuns)
	}
	return nil
}

// userJob loads a job of the user's.
func (s *Server) userJob(r *http.Request, u *store.User) (*store.Job, error) {
	id := r.PathValue("id")
	job, err := s.store.JobGet(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) || (err == nil && job.UserID != u.ID && !u.Admin) {
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

// logShortfall is the size a job's log must reach and how much of it is
// missing, from a runner's final report that some is unsent: LogEnd when
// the runner knows it, else the log's size now (none of the attempt's
// output is stored then) plus the unsent bytes.
func (s *Server) logShortfall(ctx context.Context, jobID string, u api.JobStatusUpdate) (end, missing int64) {
	size, err := s.logs.Size(ctx, jobID)
	if err != nil {
		// The log cannot even be opened: count what the runner has.
		return max(u.LogEnd, u.LogUnsent), u.LogUnsent
	}
	end = u.LogEnd
	if end <= 0 {
		end = size + u.LogUnsent
	}
	return end, max(end-size, 0)
}
