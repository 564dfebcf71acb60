package runner

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/dstackai/dstack/internal/clock"
)

// The spools of finished jobs whose logs the server has not stored in full
// (see logship.go): shipped in the background after the job, and again by
// the next life of the runner, until the server has every byte or says it
// takes no more.

func (r *Runner) spoolDir() string { return filepath.Join(r.cfg.DataDir, "spool") }

// newJobShipper returns a shipper of a job's spool under the job's lease,
// with the runner's current credential.
func (r *Runner) newJobShipper(sp *spool, jobID string, lease int64, log *slog.Logger) *shipper {
	sh := newShipper(sp, func(ctx context.Context, offset int64, data []byte) (int64, error) {
		return r.client().JobLogAppend(ctx, jobID, lease, offset, data)
	}, log)
	sh.reauth = func(ctx context.Context) {
		if !r.reauth(ctx, r.token()) {
			_ = clock.Sleep(ctx, time.Second)
		}
	}
	return sh
}

// afterJob settles a job's spool once the job is over: removed when the
// server has it all; otherwise, when the job's end was reported, shipped on
// in the background while the runner takes other jobs.
func (r *Runner) afterJob(j *job) {
	sh, sp := j.ship, j.spool
	if sh == nil {
		if sp != nil {
			_ = sp.release()
		}
		return
	}
	if !j.reported.Load() || j.lost.Load() {
		// Dropped, or its end never reported: this attempt's output has no
		// place in the job's log any more.
		j.shipCancel()
		<-sh.done
		r.closeSpool(j.log, sh, sp, false)
		return
	}
	r.life.Go(func() {
		defer j.shipCancel()
		<-sh.done
		r.closeSpool(j.log, sh, sp, true)
	})
}

// closeSpool removes a spool whose shipper ended, or, when the runner
// stops (and keep allows it), leaves it for the next start.
func (r *Runner) closeSpool(log *slog.Logger, sh *shipper, sp *spool, keep bool) {
	unsent := sh.unsent()
	switch {
	case sh.err == nil:
	case keep && errors.Is(sh.err, context.Canceled) && r.hardCtx.Err() != nil:
		log.Warn("the runner stops before the server stored the whole log of a finished job; its next start sends the rest",
			"unsent", unsent, "spool", sp.f.Name())
		if err := sp.keep(); err != nil {
			log.Warn("close the log spool", "err", err)
		}
		return
	case unsent > 0:
		log.Warn("dropping output the server did not store", "unsent", unsent, "why", sh.err)
	}
	if err := sp.release(); err != nil {
		log.Warn("remove the log spool", "err", err)
	}
}

// resumeSpools starts shipping the spools an earlier life of the runner
// left: those of finished jobs are sent; those of a job it died in are
// dropped, as the server requeues that job (or fails it) without them.
func (r *Runner) resumeSpools() {
	dir := r.spoolDir()
	ids, err := listSpools(dir)
	if err != nil {
		r.log.Warn("look for unsent job logs", "err", err)
		return
	}
	type resumed struct {
		sh  *shipper
		sp  *spool
		log *slog.Logger
	}
	var shippers []resumed
	keep := map[string]bool{}
	for _, id := range ids {
		log := r.log.With("job", id)
		sp, err := openSpool(dir, id)
		if err != nil {
			log.Warn("dropping a log spool that cannot be read", "err", err)
			continue
		}
		size, _ := sp.state()
		m := sp.getMeta()
		if !m.Final {
			log.Warn("the runner stopped in the middle of the job: dropping its unsent output; the server requeues the job", "spool_bytes", size)
			_ = sp.release()
			continue
		}
		keep[id] = true
		log.Info("sending the rest of a finished job's log", "spool_bytes", size)
		shippers = append(shippers, resumed{r.newJobShipper(sp, id, m.Lease, log), sp, log})
	}
	// Whatever else is there (a spool whose state was never saved, a
	// torn temporary file) has nothing to go with.
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		id, _, _ := strings.Cut(e.Name(), ".")
		if !keep[id] {
			_ = os.RemoveAll(filepath.Join(dir, e.Name()))
		}
	}
	for _, rs := range shippers {
		r.life.Go(func() {
			rs.sh.run(r.hardCtx)
			r.closeSpool(rs.log, rs.sh, rs.sp, true)
		})
	}
}
