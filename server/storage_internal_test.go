package server

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dstackai/dstack/api"
)

func TestClassifyStorage(t *testing.T) {
	t.Parallel()
	pathErr := func(errno error) error {
		return fmt.Errorf("append log: %w", &fs.PathError{Op: "write", Path: "/data/logs/j.log", Err: errno})
	}
	tests := []struct {
		name        string
		err         error
		full, other bool
	}{
		{"no space", pathErr(unix.ENOSPC), true, false},
		{"quota", pathErr(unix.EDQUOT), true, false},
		{"file size limit", pathErr(unix.EFBIG), true, false},
		{"I/O error", pathErr(unix.EIO), false, true},
		{"read-only", pathErr(unix.EROFS), false, true},
		{"too many open files", os.NewSyscallError("open", unix.EMFILE), false, true},
		{"missing file", pathErr(unix.ENOENT), false, false},
		{"EIO not from a file", unix.EIO, false, false},
		{"cancelled", context.Canceled, false, false},
		{"other", errors.New("boom"), false, false},
		{"nil", nil, false, false},
	}
	for _, tt := range tests {
		full, other := classifyStorage(tt.err)
		if full != tt.full || other != tt.other {
			t.Errorf("%s: classifyStorage = %v, %v; want %v, %v", tt.name, full, other, tt.full, tt.other)
		}
	}
}

// logCounter counts log records by message.
type logCounter struct {
	slog.Handler
	n map[string]int
}

func (c *logCounter) Enabled(context.Context, slog.Level) bool { return true }

func (c *logCounter) Handle(_ context.Context, r slog.Record) error {
	c.n[r.Message]++
	return nil
}

func TestWriteErrorMapsStorageFailures(t *testing.T) {
	t.Parallel()
	counter := &logCounter{Handler: slog.DiscardHandler, n: map[string]int{}}
	log := slog.New(counter)
	s := &Server{log: log, storage: newStorageMonitor([]string{"/data", "/data/logs"}, 0, log, time.Now)}
	s.storage.statfs = func(string) (fsSpace, error) { return fsSpace{Free: 0, Total: 1 << 30}, nil }
	r := httptest.NewRequest(http.MethodPost, "/api/v1/runner/jobs/j/logs", nil)
	tests := []struct {
		err        error
		status     int
		code       string
		retryAfter string
		msg        string
	}{
		{&fs.PathError{Op: "write", Path: "/data/logs/j.log", Err: unix.ENOSPC}, http.StatusInsufficientStorage, api.CodeInsufficientStorage, "", "0 B free in /data/logs"},
		{&fs.PathError{Op: "write", Path: "/data/logs/j.log", Err: unix.ENOSPC}, http.StatusInsufficientStorage, api.CodeInsufficientStorage, "", "disk is full"},
		{&fs.PathError{Op: "write", Path: "/data/logs/j.log", Err: unix.EIO}, http.StatusServiceUnavailable, api.CodeUnavailable, "5", "input/output error"},
		{&fs.PathError{Op: "write", Path: "/data/logs/j.log", Err: unix.EIO}, http.StatusServiceUnavailable, api.CodeUnavailable, "5", "try again"},
		{errors.New("a bug"), http.StatusInternalServerError, api.CodeInternal, "", "internal server error"},
	}
	for _, tt := range tests {
		w := httptest.NewRecorder()
		s.writeError(w, r, fmt.Errorf("append log: %w", tt.err))
		if w.Code != tt.status || !strings.Contains(w.Body.String(), `"code":"`+tt.code+`"`) || !strings.Contains(w.Body.String(), tt.msg) {
			t.Errorf("%v: %d %s; want %d %s with %q", tt.err, w.Code, w.Body, tt.status, tt.code, tt.msg)
		}
		if got := w.Header().Get("Retry-After"); got != tt.retryAfter {
			t.Errorf("%v: Retry-After %q, want %q", tt.err, got, tt.retryAfter)
		}
		if strings.Contains(w.Body.String(), "/data/logs/j.log") {
			t.Errorf("%v: the answer shows the server's file: %s", tt.err, w.Body)
		}
	}
	// Each episode is logged once at its start, never per request.
	if counter.n["storage full: job logs and uploads are refused with 507 until space is freed; runners keep what they could not send"] != 1 {
		t.Errorf("full-disk episode logged: %v", counter.n)
	}
	if counter.n["storage failing: job logs and uploads are refused with 503 until it works again"] != 1 {
		t.Errorf("failing-storage episode logged: %v", counter.n)
	}
	if counter.n["request failed"] != 1 || counter.n["request error"] != 0 { // the internal error only
		t.Errorf("per-request log lines: %v", counter.n)
	}
}
