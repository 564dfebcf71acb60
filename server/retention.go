package server

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/blob"
	"github.com/dstackai/dstack/store"
)

// Storage per user: quotas, deleting runs (`dstack rm`, --retention) and
// removing the bytes of what was deleted.
//
// A delete runs in one transaction that records the bytes to remove (logs,
// artifacts, code archives no user holds any more) in the store's trash;
// the server removes them once it has committed, and forgets them. Bytes a
// server could not remove (it stopped, S3 failed) stay in the trash under a
// claim that runs out, and retentionLoop removes them later, on whichever
// replica comes first.

const (
	// unusedCodeAge is how long an uploaded code archive no run uses is
	// kept.
	unusedCodeAge = time.Hour
	// retentionBatch is how many runs (or code records) one transaction of
	// the retention deletes, and how many trash items one pass claims.
	retentionBatch = 100
	// retentionBatches bounds the batches of one pass, so that a large
	// backlog is worked through over several passes, between other work.
	retentionBatches = 20
	// trashClaim is how long a server holds the trash items it removes.
	trashClaim = 10 * time.Minute
	// logSizeStep: a running job's log size is recorded each time it grew
	// by this much, and when the job ends.
	logSizeStep = 1 << 20
	// quotaCacheTTL is how long the usage read for a log append's quota
	// check is reused; other checks read it afresh.
	quotaCacheTTL = 5 * time.Second
)

// retentionEvery is how often retentionLoop runs: a tenth of the
// retention, between a second and a minute.
func (c *Config) retentionEvery() time.Duration {
	if c.Retention <= 0 {
		return time.Minute
	}
	return min(max(c.Retention/10, time.Second), time.Minute)
}

// quotaOf is the user's storage quota in bytes, 0 for none: their own, or
// the server's default.
func (s *Server) quotaOf(u *store.User) int64 {
	if u.StorageQuota != nil {
		return *u.StorageQuota
	}
	return s.cfg.StorageQuota
}

// errQuota is the answer to a write that would take a user over quota.
func errQuota(used, quota int64) error {
	e := api.Errorf(http.StatusInsufficientStorage, api.CodeQuotaExceeded,
		"storage quota exceeded: %s used of %s; delete runs with `dstack rm` or ask an admin to raise it",
		quotaSize(used), quotaSize(quota))
	e.Cause = api.CauseStorage
	return e
}

// quotaSize writes n bytes in the largest binary unit under it, with one
// decimal where it has one: "49.8 GiB", "50 GiB", "512 B".
func quotaSize(n int64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	v, i := float64(n), 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	v = math.Floor(v*10) / 10 // never shows more than is used
	return strings.TrimSuffix(fmt.Sprintf("%.1f", v), ".0") + " " + units[i]
}

// checkQuota refuses a write of add bytes that would take u over quota; a
// write of 0 bytes (a run) is refused once the user is at the quota.
func (s *Server) checkQuota(ctx context.Context, u *store.User, add int64) error {
	quota := s.quotaOf(u)
	if quota <= 0 {
		return nil
	}
	used, err := s.store.UserStorageUsed(ctx, u.ID)
	if err != nil {
		return fmt.Errorf("storage used by %s: %w", u.Name, err)
	}
	s.quotas.forget(u.ID)
	if total := used.Total(); total+add > quota || (add == 0 && total >= quota) {
		return errQuota(total, quota)
	}
	return nil
}

// checkQuotaOf is checkQuota for a user known by ID (a runner's writes).
func (s *Server) checkQuotaOf(ctx context.Context, userID string, add int64) error {
	u, err := s.store.UserGet(ctx, userID)
	if err != nil {
		return err
	}
	return s.checkQuota(ctx, u, add)
}

// checkLogQuota is the quota check of a log append: it reads the usage at
// most every quotaCacheTTL per user, adding what was appended since.
func (s *Server) checkLogQuota(ctx context.Context, userID string, add int64) error {
	now := s.cfg.Now()
	q := s.quotas.get(userID, now)
	if q == nil {
		u, err := s.store.UserGet(ctx, userID)
		if err != nil {
			return err
		}
		q = &quotaEntry{quota: s.quotaOf(u), at: now}
		if q.quota > 0 {
			used, err := s.store.UserStorageUsed(ctx, userID)
			if err != nil {
				return err
			}
			q.used = used.Total()
		}
		s.quotas.put(userID, q)
	}
	if q.quota <= 0 {
		return nil
	}
	if s.quotas.add(userID, add) > q.quota {
		s.quotas.add(userID, -add)
		return errQuota(q.used, q.quota)
	}
	return nil
}

// quotaCache keeps each user's quota and usage for log appends.
type quotaCache struct {
	mu sync.Mutex
	m  map[string]*quotaEntry
}

type quotaEntry struct {
	quota, used int64
	at          time.Time
}

func (c *quotaCache) get(userID string, now time.Time) *quotaEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.m[userID]
	if e == nil || now.Sub(e.at) >= quotaCacheTTL || now.Before(e.at) {
		return nil
	}
	cp := *e
	return &cp
}

func (c *quotaCache) put(userID string, e *quotaEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]*quotaEntry{}
	}
	cp := *e
	c.m[userID] = &cp
}

// add counts n more bytes used and returns the usage.
func (c *quotaCache) add(userID string, n int64) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.m[userID]
	if e == nil {
		return 0
	}
	e.used += n
	return e.used
}

func (c *quotaCache) forget(userID string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, userID)
}

// logSizes are the log sizes last recorded per running job.
type logSizes struct {
	mu sync.Mutex
	m  map[string]int64
}

// appended records a job's log size when it grew by logSizeStep since it
// was last recorded.
func (s *Server) logAppended(ctx context.Context, jobID string, size int64) {
	s.logSizes.mu.Lock()
	last, ok := s.logSizes.m[jobID]
	due := !ok && size >= logSizeStep || ok && size-last >= logSizeStep
	if due {
		if s.logSizes.m == nil {
			s.logSizes.m = map[string]int64{}
		}
		s.logSizes.m[jobID] = size
	}
	s.logSizes.mu.Unlock()
	if due {
		s.recordLogSize(ctx, jobID)
	}
}

// recordLogSize records the bytes the job's log file holds.
func (s *Server) recordLogSize(ctx context.Context, jobID string) {
	s.recordLogSizeOf(ctx, jobID, s.logs.DiskSize(ctx, jobID))
}

// recordLogSizeOf records size as the bytes the job's log holds.
func (s *Server) recordLogSizeOf(ctx context.Context, jobID string, size int64) {
	err := s.store.JobSetLogSize(ctx, store.JobSetLogSizeParams{ID: jobID, Size: size})
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		s.log.Warn("record a log's size", "job", jobID, "err", err)
	}
}

// finishLog ends a job's log: followers return, and its size is recorded
// (a job without output has nothing to record: sizes start at 0).
func (s *Server) finishLog(jobID string) {
	s.endLog(jobID)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if size := s.logs.DiskSize(ctx, jobID); size > 0 {
		s.recordLogSizeOf(ctx, jobID, size)
	}
}

// endLog ends a job's log whose size the job's end recorded already (a log
// in the database: store.Store.JobSetStatus records it): followers return.
func (s *Server) endLog(jobID string) {
	_ = s.logs.Finish(jobID)
	s.logSizes.mu.Lock()
	delete(s.logSizes.m, jobID)
	s.logSizes.mu.Unlock()
}

// handleRunDelete deletes a finished run of the user's (anyone's for an
// admin) with its logs, artifacts and code: DELETE /runs/{name}, with
// ?force=true for a tagged run.
func (s *Server) handleRunDelete(w http.ResponseWriter, r *http.Request, u *store.User) error {
	name := r.PathValue("name")
	force := r.URL.Query().Get("force") == "true"
	p := store.RunDeleteParams{Name: name, UserID: u.ID, Force: force, Now: s.cfg.Now()}
	if u.Admin {
		p.UserID = ""
	}
	p.ClaimUntil = p.Now.Add(trashClaim)
	d, err := s.store.RunDelete(r.Context(), p)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return notFound("no run named %q: `dstack ps -a` lists your runs", name)
	case errors.Is(err, store.ErrRunUnfinished):
		return api.Errorf(http.StatusConflict, api.CodeConflict,
			"run %s is not finished: stop it first with `dstack stop %s`, then delete it", name, name)
	case errors.Is(err, store.ErrRunTagged):
		return api.Errorf(http.StatusConflict, api.CodeConflict,
			"run %s is tagged (`dstack tags` lists the tags): delete it and its tags with `dstack rm -f %s`, or delete the tags first with `dstack tag --delete TAG`", name, name)
	case err != nil:
		return fmt.Errorf("delete run: %w", err)
	}
	freed := s.emptyTrash(context.WithoutCancel(r.Context()), d.Trash)
	s.deleted(d)
	s.log.Info("run deleted", "run", name, "user", u.Name, "force", force, "freed_bytes", freed)
	writeJSON(w, http.StatusOK, api.RunDeleteResponse{Name: name, FreedBytes: freed})
	return nil
}

// deleted tells the users whose runs went, and forgets their cached usage.
func (s *Server) deleted(d *store.Deleted) {
	users := map[string]bool{}
	for _, r := range d.Runs {
		users[r.UserID] = true
	}
	for _, c := range d.Codes {
		users[c.UserID] = true
	}
	for id := range users {
		s.quotas.forget(id)
		if d.Runs != nil {
			s.events.publish(id, api.EventRuns)
		}
	}
}

// emptyTrash removes the bytes of trash items claimed by this server and
// forgets those removed; it returns how many bytes were freed. Items it
// could not remove stay, for retentionLoop to retry once the claim ends.
func (s *Server) emptyTrash(ctx context.Context, items []*store.TrashItem) int64 {
	var (
		freed int64
		done  []*store.TrashItem
	)
	for _, it := range items {
		n, err := s.removeBytes(ctx, it)
		if err != nil {
			s.log.Warn("remove the bytes of deleted data; retried later", "kind", it.Kind, "key", it.Key, "store", it.Store, "err", err)
			continue
		}
		freed += n
		done = append(done, it)
	}
	if err := s.store.TrashDelete(ctx, done); err != nil {
		s.log.Warn("forget removed data; removing it again later is harmless", "err", err)
	}
	return freed
}

func (s *Server) removeBytes(ctx context.Context, it *store.TrashItem) (int64, error) {
	switch it.Kind {
	case store.TrashLog:
		return s.logs.Delete(ctx, it.Key)
	case store.TrashCode:
		o, err := s.blobs.Stat(ctx, codeKey(it.Key))
		if errors.Is(err, blob.ErrNotFound) {
			return 0, nil
		}
		if err != nil {
			return 0, err
		}
		return o.Size, s.blobs.Delete(ctx, codeKey(it.Key))
	case store.TrashArtifacts:
		st, err := s.jobBlobs(ctx, &store.Job{ID: it.Key, ArtifactStore: it.Store})
		if err != nil {
			return 0, err
		}
		n, err := blob.DeletePrefix(ctx, st, artifactPrefix(it.Key))
		if err != nil {
			return n, err
		}
		m, err := blob.DeletePrefix(ctx, st, checkpointPrefix(it.Key))
		return n + m, err
	case store.TrashCheckpoints:
		st, err := s.jobBlobs(ctx, &store.Job{ID: it.Key, ArtifactStore: it.Store})
		if err != nil {
			return 0, err
		}
		return blob.DeletePrefix(ctx, st, checkpointPrefix(it.Key))
	}
	return 0, fmt.Errorf("unknown kind of trash %q", it.Kind)
}

// retentionLoop deletes, every retentionEvery, the finished untagged runs
// older than the retention (when there is one) and the code archives no run
// used within unusedCodeAge, and removes the bytes other passes left in the
// trash.
func (s *Server) retentionLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.retentionEvery())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.retentionPass(ctx)
	}
}

// retentionPass is one pass of retentionLoop.
func (s *Server) retentionPass(ctx context.Context) {
	type batch func(now time.Time) (*store.Deleted, error)
	run := func(what string, del batch) {
		for range retentionBatches {
			now := s.cfg.Now()
			d, err := del(now)
			if err != nil {
				if ctx.Err() == nil {
					s.log.Error(what, "err", err)
				}
				return
			}
			freed := s.emptyTrash(ctx, d.Trash)
			s.deleted(d)
			if len(d.Runs)+len(d.Codes) > 0 {
				s.log.Info(what, "runs", len(d.Runs), "code_archives", len(d.Codes), "freed_bytes", freed)
			}
			if len(d.Runs) < retentionBatch && len(d.Codes) < retentionBatch {
				return
			}
		}
	}
	if s.cfg.Retention > 0 {
		run("runs deleted by the retention", func(now time.Time) (*store.Deleted, error) {
			return s.store.RunDeleteFinishedBefore(ctx, store.RunDeleteFinishedBeforeParams{
				FinishedBefore: now.Add(-s.cfg.Retention), Limit: retentionBatch, Now: now, ClaimUntil: now.Add(trashClaim)})
		})
		// The audit log is kept as long as the runs.
		if n, err := s.auditPrune(ctx, s.cfg.Now().Add(-s.cfg.Retention)); err != nil {
			if ctx.Err() == nil {
				s.log.Error("audit entries deleted by the retention", "err", err)
			}
		} else if n > 0 {
			s.log.Info("audit entries deleted by the retention", "entries", n)
		}
	}
	run("unused code archives deleted", func(now time.Time) (*store.Deleted, error) {
		return s.store.CodeDeleteUnused(ctx, store.CodeDeleteUnusedParams{
			UploadedBefore: now.Add(-unusedCodeAge), Limit: retentionBatch, Now: now, ClaimUntil: now.Add(trashClaim)})
	})
	for range retentionBatches {
		now := s.cfg.Now()
		items, err := s.store.TrashClaim(ctx, store.TrashClaimParams{Now: now, Until: now.Add(trashClaim), Limit: retentionBatch})
		if err != nil {
			if ctx.Err() == nil {
				s.log.Error("claim deleted data to remove", "err", err)
			}
			return
		}
		s.emptyTrash(ctx, items)
		if len(items) < retentionBatch {
			return
		}
	}
}

// UserStorageUsed is what each user's code, logs and artifacts hold, by
// user ID, for `dstack users list`.
func (s *Server) UserStorageUsed(ctx context.Context) (map[string]*store.StorageUsage, error) {
	return s.store.UserStorageUsedAll(ctx)
}

// SetUserStorageQuota sets a user's storage quota in bytes (nil: the
// server's default, --storage-quota), for `dstack users set
// --storage-quota`. ErrNotFound for an unknown user.
func (s *Server) SetUserStorageQuota(ctx context.Context, userID string, quota *int64) error {
	if quota != nil && *quota < 0 {
		return invalid("storage quota %d: give a size of 0 (no quota) or more", *quota)
	}
	if err := s.store.UserSetStorageQuota(ctx, store.UserSetStorageQuotaParams{UserID: userID, Quota: quota}); err != nil {
		return err
	}
	s.quotas.forget(userID)
	return nil
}
