package server

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/store"
)

// maxJSONBody bounds JSON request bodies.
const maxJSONBody = 4 << 20

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// StatusClientClosedRequest is what a request whose client went away before
// the answer counts as in the metrics (nginx's 499): not a server error.
const StatusClientClosedRequest = 499

// errorAnswer is how a failed request is answered and logged.
type errorAnswer struct {
	err        *api.Error
	retryAfter time.Duration // > 0: sent as Retry-After
	level      slog.Level    // how the server logs the failure
	logMsg     string        // the log record's message; "" logs nothing
}

// classify decides how err is answered: its status, code and message, the
// cause class of a server-side failure, and how it is logged. A client that
// went away gets StatusClientClosedRequest, logged at debug.
func classify(r *http.Request, err error) errorAnswer {
	var (
		ae *api.Error
		ue *store.UnavailableError
	)
	switch {
	case errors.As(err, &ae):
		if ae.Status == 0 {
			ae.Status = http.StatusBadRequest
		}
		a := errorAnswer{err: ae}
		if ae.Status >= 500 {
			if ae.Cause == "" {
				ae.Cause = api.CauseInternal
			}
			a.level, a.logMsg = slog.LevelWarn, "request error"
		}
		return a
	case r.Context().Err() != nil:
		// The client is gone: whatever failed, failed because of that,
		// and nobody reads the answer.
		return errorAnswer{
			err:   api.Errorf(StatusClientClosedRequest, api.CodeUnavailable, "client closed the request"),
			level: slog.LevelDebug, logMsg: "client closed the request",
		}
	case errors.Is(err, store.ErrNotFound):
		return errorAnswer{err: api.Errorf(http.StatusNotFound, api.CodeNotFound, "not found")}
	case errors.Is(err, store.ErrLeaseLost):
		return errorAnswer{err: api.Errorf(http.StatusConflict, api.CodeLeaseLost, "this job is no longer assigned to this runner: drop it")}
	case errors.As(err, &ue):
		a := errorAnswer{
			err:        api.Errorf(http.StatusServiceUnavailable, api.CodeUnavailable, "%s; retry", ue.Reason),
			retryAfter: 5 * time.Second,
			level:      slog.LevelWarn, logMsg: "database unavailable",
		}
		if ue.Busy {
			a.retryAfter = time.Second
		}
		a.err.Cause = api.CauseDatabase
		return a
	}
	ae = api.Errorf(http.StatusInternalServerError, api.CodeInternal, "internal server error; the server log has the details")
	ae.Cause = api.CauseInternal
	return errorAnswer{err: ae, level: slog.LevelError, logMsg: "request failed"}
}

// writeError answers with err as an api.Error (see classify); the details of
// server-side failures go to the log, not to the client.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() == nil && isStorageFailure(err) {
		// 507, or 503 with Retry-After, logged once per episode (storage.go).
		ae := s.storage.failed(w, err)
		ae.Cause = api.CauseStorage
		writeJSON(w, ae.Status, api.ErrorBody{Error: ae})
		return
	}
	a := classify(r, err)
	if a.logMsg != "" {
		s.log.Log(r.Context(), a.level, a.logMsg, "method", r.Method, "path", r.URL.Path,
			"status", a.err.Status, "cause", a.err.Cause, "err", err)
	}
	if a.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(a.retryAfter.Seconds())))
	}
	writeJSON(w, a.err.Status, api.ErrorBody{Error: a.err})
}

// readJSON decodes a JSON body into v, refusing unknown fields and oversized
// bodies with messages that say which.
func readJSON(r *http.Request, v any) error {
	body := &io.LimitedReader{R: r.Body, N: maxJSONBody + 1}
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if body.N <= 0 {
			return api.Errorf(http.StatusRequestEntityTooLarge, api.CodeTooLarge, "request body is larger than %d MiB: send less", maxJSONBody>>20)
		}
		if errors.Is(err, io.EOF) {
			return api.Errorf(http.StatusBadRequest, api.CodeInvalid, "request body is empty: send a JSON object")
		}
		return api.Errorf(http.StatusBadRequest, api.CodeInvalid, "request body is not valid JSON for this endpoint: %v", err)
	}
	return nil
}

func invalid(format string, args ...any) error {
	return api.Errorf(http.StatusBadRequest, api.CodeInvalid, format, args...)
}

func notFound(format string, args ...any) error {
	return api.Errorf(http.StatusNotFound, api.CodeNotFound, format, args...)
}

// flushWriter flushes after every write, for streamed responses.
type flushWriter struct {
	w http.ResponseWriter
	f *http.ResponseController
}

func (fw flushWriter) Write(p []byte) (int, error) { return fw.w.Write(p) }
func (fw flushWriter) Flush()                      { _ = fw.f.Flush() }

// unavailable is a 503 whose cause class is cause (one of api.Cause*).
func unavailable(cause, format string, args ...any) *api.Error {
	ae := api.Errorf(http.StatusServiceUnavailable, api.CodeUnavailable, format, args...)
	ae.Cause = cause
	return ae
}
