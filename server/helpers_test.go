package server_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"testing"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/client"
)

// codeArchive returns a gzip'd tar holding files (name -> content).
func codeArchive(t testing.TB, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for name, content := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(content)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func uploadCode(t testing.TB, c *client.Client) string {
	t.Helper()
	up, err := c.CodeUpload(context.Background(), bytes.NewReader(codeArchive(t, map[string]string{"README": "hello\n"})))
	if err != nil {
		t.Fatalf("upload code: %v", err)
	}
	return up.CodeID
}

// submitIndependentJobs queues n jobs without dependencies, in runs of up
// to 1000 jobs.
func submitIndependentJobs(t testing.TB, c *client.Client, codeID string, n int) {
	t.Helper()
	for n > 0 {
		size := min(n, 1000)
		req := api.RunSubmitRequest{CodeID: codeID, Workflow: "w0"}
		for i := range size {
			req.Jobs = append(req.Jobs, api.JobSpec{Workflow: fmt.Sprintf("w%d", i), Provider: "bash", Commands: []string{"true"}})
		}
		if _, err := c.RunSubmit(context.Background(), req); err != nil {
			t.Fatalf("submit: %v", err)
		}
		n -= size
	}
}
