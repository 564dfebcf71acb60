package cli

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/client"
)

// TestWaitRunRetriesPolicy pins that following a run retries what the
// client's policy retries (the runner does the same), and gives up at once
// on what it does not.
func TestWaitRunRetriesPolicy(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		answers []int // the first answers to GET /runs/NAME; then the finished run
		wantErr string
	}{
		{"500 then done", []int{http.StatusInternalServerError}, ""},
		{"429 then done", []int{http.StatusTooManyRequests}, ""},
		{"507 then done", []int{http.StatusInsufficientStorage}, ""},
		{"502, 503, 504 then done", []int{http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout}, ""},
		{"404 is final", []int{http.StatusNotFound}, `there is no run "calm-cat-1"`},
		{"501 is final", []int{http.StatusNotImplemented}, "not implemented"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var calls atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/api/v1/runs/calm-cat-1" {
					http.NotFound(w, r)
					return
				}
				if n := int(calls.Add(1)); n <= len(tc.answers) {
					code := api.CodeInternal
					if tc.answers[n-1] == http.StatusNotFound {
						code = api.CodeNotFound
					}
					w.Header().Set("Content-Type", "application/json")
					w.WriteHeader(tc.answers[n-1])
					_ = json.NewEncoder(w).Encode(api.ErrorBody{Error: &api.Error{Code: code, Message: strings.ToLower(http.StatusText(tc.answers[n-1]))}})
					return
				}
				_ = json.NewEncoder(w).Encode(api.Run{Name: "calm-cat-1", Status: api.StatusDone})
			}))
			defer srv.Close()
			cl, err := client.New(srv.URL, "t")
			if err != nil {
				t.Fatal(err)
			}
			c := &apiClient{Client: cl, s: &settings{}}
			var stderr bytes.Buffer
			sw := &serverWait{window: time.Hour, run: "calm-cat-1", url: srv.URL, stderr: &stderr, now: time.Now}
			run, err := waitRun(t.Context(), c, "calm-cat-1", sw)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("waitRun = %v, want an error saying %q", err, tc.wantErr)
				}
				if n := calls.Load(); n != 1 {
					t.Errorf("asked %d times, want once", n)
				}
				return
			}
			if err != nil || run.Status != api.StatusDone {
				t.Fatalf("waitRun = %v, %v; want the finished run", run, err)
			}
			if !strings.Contains(stderr.String(), "Reached the dstack server again") {
				t.Errorf("the outage's end is not told:\n%s", stderr.String())
			}
		})
	}
}
