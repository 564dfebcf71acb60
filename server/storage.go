package server

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/internal/bytesize"
)

// Storage trouble is said, never swallowed. A write to the server's disk
// (a job's log, an uploaded code archive, an artifact kept in the data
// directory) that fails for lack of space is answered 507 Insufficient
// Storage; one that fails for another reason of the disk's (an I/O error, a
// read-only file system, too many open files) is answered 503 with a
// Retry-After. Either starts an episode: the server log names it once, at
// its start, and once more when storage works again; /healthz answers 503
// "degraded" and /metrics sets dstack_storage_degraded while it lasts.
//
// Below a free-space watermark (--min-free-space: by default 1 GiB or 5 %
// of the file system, whichever is smaller) new code uploads and runs are
// refused with 507, so that the jobs already running keep room for their
// logs.

// DefaultMinFreeSpace is the watermark's absolute part; the default
// watermark is the smaller of it and MinFreePercent of the file system.
const (
	DefaultMinFreeSpace = 1 << 30
	MinFreePercent      = 5
)

// retryAfterSeconds is what a 503 for a storage failure asks clients to
// wait.
const retryAfterSeconds = 5

// fsSpace is what statfs says of a file system, in bytes.
type fsSpace struct{ Free, Total uint64 }

func statfs(path string) (fsSpace, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return fsSpace{}, fmt.Errorf("measure free space in %s: %w", path, err)
	}
	bs := uint64(st.Bsize) //nolint:unconvert,gosec // int64 on Linux, uint32 on macOS; never negative
	return fsSpace{Free: st.Bavail * bs, Total: st.Blocks * bs}, nil
}

// storageMonitor watches the directories the server writes to.
type storageMonitor struct {
	dirs    []string // the data directory, and the log directory in it
	minFree int64    // the watermark: 0 the default, < 0 none
	statfs  func(path string) (fsSpace, error)
	log     *slog.Logger
	now     func() time.Time

	// mu orders the episodes' starts and ends; failure, the episode in
	// progress (nil when none), is read without it on every successful
	// write, the log appends' hot path.
	mu      sync.Mutex
	failure atomic.Pointer[storageFailure]
}

// storageFailure is an episode of failing writes.
type storageFailure struct {
	full  bool   // out of space (or over a size or quota limit)
	dir   string // the watched directory the failing path is in
	err   error
	since time.Time
}

func newStorageMonitor(dirs []string, minFree int64, log *slog.Logger, now func() time.Time) *storageMonitor {
	return &storageMonitor{dirs: dirs, minFree: minFree, statfs: statfs, log: log, now: now}
}

// classifyStorage says whether err is the disk failing: full for no space,
// a quota or a file size limit (ENOSPC, EDQUOT, EFBIG), and other for an
// error of the file system itself. Errors of a path that is missing or
// refused, and of anything but the disk, are neither.
func classifyStorage(err error) (full, other bool) {
	switch {
	case err == nil:
		return false, false
	case errors.Is(err, unix.ENOSPC), errors.Is(err, unix.EDQUOT), errors.Is(err, unix.EFBIG):
		return true, false
	}
	var pe *fs.PathError
	var se *os.SyscallError
	if !errors.As(err, &pe) && !errors.As(err, &se) {
		return false, false
	}
	for _, e := range []error{unix.EIO, unix.EROFS, unix.EMFILE, unix.ENFILE, unix.ENOMEM} {
		if errors.Is(err, e) {
			return false, true
		}
	}
	return false, false
}

// isStorageFailure reports whether err is the disk failing (see
// classifyStorage).
func isStorageFailure(err error) bool {
	full, other := classifyStorage(err)
	return full || other
}

// threshold is the watermark for a file system of total bytes.
func (m *storageMonitor) threshold(total uint64) uint64 {
	switch {
	case m.minFree < 0:
		return 0
	case m.minFree > 0:
		return uint64(m.minFree)
	}
	return min(DefaultMinFreeSpace, total*MinFreePercent/100)
}

// dirOf is the watched directory path is in: the deepest that holds it,
// the data directory when none does.
func (m *storageMonitor) dirOf(path string) string {
	best := m.dirs[0]
	for _, d := range m.dirs {
		if rel, err := filepath.Rel(d, path); err == nil && !strings.HasPrefix(rel, "..") && len(d) > len(best) {
			best = d
		}
	}
	return best
}

// failed answers err when it is a storage failure, starting an episode
// (logged once) when none is in progress, and nil otherwise. A 503 gets
// its Retry-After header on w.
func (m *storageMonitor) failed(w http.ResponseWriter, err error) *api.Error {
	full, other := classifyStorage(err)
	if !full && !other {
		return nil
	}
	dir := m.dirs[0]
	var pe *fs.PathError
	if errors.As(err, &pe) {
		dir = m.dirOf(pe.Path)
	}
	free := m.freeText(dir)
	m.mu.Lock()
	if f := m.failure.Load(); f == nil || f.full != full {
		m.failure.Store(&storageFailure{full: full, dir: dir, err: err, since: m.now()})
		if full {
			m.log.Error("storage full: job logs and uploads are refused with 507 until space is freed; runners keep what they could not send",
				"dir", dir, "free", free, "err", err)
		} else {
			m.log.Error("storage failing: job logs and uploads are refused with 503 until it works again", "dir", dir, "err", err)
		}
	}
	m.mu.Unlock()
	if full {
		return api.Errorf(http.StatusInsufficientStorage, api.CodeInsufficientStorage,
			"the server's disk is full (%s free in %s): nothing more can be stored until space is freed there", free, dir)
	}
	w.Header().Set("Retry-After", fmt.Sprint(retryAfterSeconds))
	return api.Errorf(http.StatusServiceUnavailable, api.CodeUnavailable, "the server's storage failed (%v): try again shortly", unwrapPath(err))
}

// unwrapPath is err without the server's paths: the errno's words.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// succeeded ends the episode in progress: a write went through.
func (m *storageMonitor) succeeded() {
	if m.failure.Load() == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.endLocked("a write succeeded")
}

func (m *storageMonitor) endLocked(why string) {
	f := m.failure.Swap(nil)
	if f == nil {
		return
	}
	m.log.Info("storage works again", "dir", f.dir, "why", why, "after", m.now().Sub(f.since).Round(time.Second))
}

// space measures the file system of dir.
func (m *storageMonitor) space(dir string) (fsSpace, error) {
	m.mu.Lock()
	f := m.statfs
	m.mu.Unlock()
	return f(dir)
}

func (m *storageMonitor) freeText(dir string) string {
	sp, err := m.space(dir)
	if err != nil {
		return "unknown space"
	}
	return bytesize.Format(int64(sp.Free)) //nolint:gosec // a disk under 8 EiB
}

// storageState is the storage's condition, for /healthz and /metrics.
type storageState struct {
	cause   string // "" when healthy, else disk_full, low_space or io_error
	message string
	free    map[string]uint64 // free bytes by watched directory
	// low is the first watched directory under the watermark, if any:
	// "X free in DIR, under the Y of --min-free-space".
	low string
}

// state checks the watched directories now. An out-of-space episode ends
// here once its file system has room above the watermark again, even
// before the next write.
func (m *storageMonitor) state() storageState {
	st := storageState{free: map[string]uint64{}}
	for _, d := range m.dirs {
		sp, err := m.space(d)
		if err != nil {
			continue
		}
		st.free[d] = sp.Free
		if th := m.threshold(sp.Total); st.low == "" && sp.Free < th {
			st.low = fmt.Sprintf("%s free in %s, under the %s of --min-free-space", bytesize.Format(int64(sp.Free)), d, bytesize.Format(int64(th))) //nolint:gosec // disks under 8 EiB
		}
	}
	low := st.low
	m.mu.Lock()
	defer m.mu.Unlock()
	if f := m.failure.Load(); f != nil && f.full {
		if free, ok := st.free[f.dir]; ok && low == "" && free > 0 {
			m.endLocked("space was freed")
		}
	}
	switch f := m.failure.Load(); {
	case f != nil && f.full:
		st.cause, st.message = "disk_full", fmt.Sprintf("disk full: %s free in %s", bytesize.Format(int64(st.free[f.dir])), f.dir) //nolint:gosec // a disk under 8 EiB
	case f != nil:
		st.cause, st.message = "io_error", fmt.Sprintf("storage failing in %s: %v", f.dir, unwrapPath(f.err))
	case low != "":
		st.cause, st.message = "low_space", "low on space: "+low+": new runs and code uploads are refused"
	}
	return st
}

// admit refuses new work (a code upload, a run) with 507 while the disk is
// full or a watched file system is below the watermark.
func (m *storageMonitor) admit() error {
	st := m.state()
	why := st.low
	switch {
	case st.cause == "disk_full":
		why = st.message
	case why == "":
		return nil
	}
	return api.Errorf(http.StatusInsufficientStorage, api.CodeInsufficientStorage,
		"the server refuses new runs and code uploads: %s; the logs of running jobs need the room: free space there, or lower `dstack server --min-free-space`", why)
}
