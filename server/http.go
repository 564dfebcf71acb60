package server

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"

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

// writeError answers with err as an api.Error; errors that are not API errors
// are logged and answered as internal errors without their details.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var ae *api.Error
	switch {
	case errors.As(err, &ae):
	case errors.Is(err, store.ErrNotFound):
		ae = api.Errorf(http.StatusNotFound, api.CodeNotFound, "not found")
	case errors.Is(err, store.ErrLeaseLost):
		ae = api.Errorf(http.StatusConflict, api.CodeLeaseLost, "this job is no longer assigned to this runner: drop it")
	case isStorageFailure(err):
		// 507 or 503, logged once per episode (storage.go).
		ae = s.storage.failed(w, err)
		writeJSON(w, ae.Status, api.ErrorBody{Error: ae})
		return
	default:
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		ae = api.Errorf(http.StatusInternalServerError, api.CodeInternal, "internal server error; the server log has the details")
	}
	if ae.Status == 0 {
		ae.Status = http.StatusBadRequest
	}
	if ae.Status >= 500 {
		s.log.Log(r.Context(), slog.LevelWarn, "request error", "path", r.URL.Path, "status", ae.Status, "msg", ae.Message)
	}
	writeJSON(w, ae.Status, api.ErrorBody{Error: ae})
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
