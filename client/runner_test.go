package client

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
)

func TestRunnerJoin(t *testing.T) {
	t.Parallel()
	var (
		auth string
		body map[string]any
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/api/v1/runners/join" {
			http.NotFound(w, r)
			return
		}
		auth = r.Header.Get("Authorization")
		_ = json.NewDecoder(r.Body).Decode(&body)
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(api.RunnerRegisterResponse{RunnerID: "r1", Token: "rt", ExpiresAt: time.Now().Add(time.Hour)})
	}))
	defer srv.Close()
	c, err := New(srv.URL, "user-token-must-not-be-sent")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.RunnerJoin(t.Context(), api.RunnerJoinRequest{
		RunnerRegisterRequest: api.RunnerRegisterRequest{Name: "n", Hostname: "h", Executor: "shell", Version: "v1", Resources: api.HostResources{CPUs: 2, MemoryMiB: 4096}},
		JoinToken:             "jt",
	})
	if err != nil {
		t.Fatal(err)
	}
	if resp.RunnerID != "r1" || resp.Token != "rt" {
		t.Errorf("response %+v", resp)
	}
	if auth != "" {
		t.Errorf("Authorization %q sent with a join", auth)
	}
	// The registration's fields sit beside join_token, not nested.
	for _, k := range []string{"join_token", "name", "hostname", "executor", "version", "resources"} {
		if _, ok := body[k]; !ok {
			t.Errorf("body %v lacks %q", body, k)
		}
	}
}

func TestRunnerInterruption(t *testing.T) {
	t.Parallel()
	var (
		auth, route string
		body        map[string]any
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		route = r.Method + " " + r.URL.Path
		auth = r.Header.Get("Authorization")
		_ = json.NewDecoder(r.Body).Decode(&body)
		_ = json.NewEncoder(w).Encode(api.RunnerInterruptionResponse{Reason: "reclaimed"})
	}))
	defer srv.Close()
	c, err := New(srv.URL, "runner-credential")
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 3, 1, 10, 44, 7, 0, time.UTC)
	resp, err := c.RunnerInterruption(t.Context(), api.RunnerInterruptionRequest{Action: "terminate", Time: at})
	if err != nil || resp.Reason != "reclaimed" {
		t.Fatalf("RunnerInterruption = %+v, %v", resp, err)
	}
	if route != "POST /api/v1/runner/interruption" || auth != "Bearer runner-credential" {
		t.Errorf("sent %s with Authorization %q", route, auth)
	}
	if body["action"] != "terminate" || body["time"] != "2026-03-01T10:44:07Z" {
		t.Errorf("body %v", body)
	}
}
