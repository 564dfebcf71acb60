package main

import (
	"encoding/json"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/client"
)

// BenchmarkHTTPAlone is the most requests a second this machine serves in
// the shape of the HTTP side's, with no queue behind them: the same number
// of runners, each reporting a job's end with the claim of its next
// (api.JobStatusUpdate) through dstack's client, and a plain net/http
// handler that reads the report and answers the next assignment
// (api.JobStatusResult) without any store. The HTTP side's rate can be at
// most this, less what the queue itself costs on the same processors.
//
//	go test -run '^$' -bench HTTPAlone -benchtime 50000x ./river/
func BenchmarkHTTPAlone(b *testing.B) {
	// The answer has the fields the server's has: the job that ended and
	// the runner's next, both the runner's.
	now := time.Now().UTC()
	job := api.Job{
		ID: "0123456789abcdef", RunName: "bench-run", Workflow: "w1", Status: api.StatusDownloading,
		RunnerID: "fedcba9876543210", RunnerName: "bench-123", Spec: noopSpec(1), SubmittedAt: now,
	}
	ended := job
	ended.Status, ended.StartedAt, ended.FinishedAt = api.StatusDone, &now, &now
	answer := api.JobStatusResult{Job: ended, Next: &api.Assignment{Job: job, Lease: 1}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+api.PathPrefix+"/runner/jobs/{id}/status", func(w http.ResponseWriter, r *http.Request) {
		var u api.JobStatusUpdate
		if err := json.NewDecoder(r.Body).Decode(&u); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(answer)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	b.Cleanup(func() { _ = srv.Close() })
	c, err := client.New("http://"+ln.Addr().String(), "runner-credential")
	if err != nil {
		b.Fatal(err)
	}
	runners := defaultConfig().Runners
	work := make(chan struct{}, runners)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		fail error
	)
	ctx := b.Context()
	start := time.Now()
	for range runners {
		wg.Go(func() {
			for range work {
				_, err := c.JobSetStatus(ctx, job.ID, 1, api.JobStatusUpdate{Status: api.StatusDone, Next: &api.ClaimRequest{Free: host}})
				if err != nil {
					mu.Lock()
					fail = err
					mu.Unlock()
				}
			}
		})
	}
	for b.Loop() {
		work <- struct{}{}
	}
	close(work)
	wg.Wait() // the last requests are answered
	elapsed := time.Since(start)
	if fail != nil {
		b.Fatal(fail)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "requests/s")
}
