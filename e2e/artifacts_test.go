package e2e

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dstackai/dstack/api"
)

// gen writes its variable into out/data.txt: runs with values of one length
// write files of one size and other content.
var gen = map[string]string{".dstack/workflows.yaml": `workflows:
  - name: gen
    provider: bash
    commands:
      - mkdir -p out && printf '%s' '${{ content }}' > out/data.txt
    artifacts: [out]
    variables: {content: none}
`}

// TestArtifactsOfAnotherRunAreReplaced: downloads of two runs into one
// directory, whose files have one size and other content. The second
// replaces the first's file (its size matches, its hash does not), and a
// .part left by a download of the first is not resumed by the second.
func TestArtifactsOfAnotherRunAreReplaced(t *testing.T) {
	eachDB(t, func(t *testing.T, dsn string) {
		c := newCluster(t, dsn)
		c.startRunner("r1")
		dir := project(t, gen)
		first, second := strings.Repeat("a", 64), strings.Repeat("b", 64)
		runOf := func(content string) string {
			t.Helper()
			r := c.dstack(dir, "run", "gen", "--content", content)
			if r.code != 0 {
				t.Fatalf("%s", r)
			}
			return runName(t, r.stderr)
		}
		run1, run2 := runOf(first), runOf(second)
		list := func(name string) api.ArtifactFile {
			t.Helper()
			r := c.dstack("", "artifacts", "list", name, "--json")
			var fs []api.ArtifactFile
			if err := json.Unmarshal([]byte(r.stdout), &fs); r.code != 0 || err != nil || len(fs) != 1 {
				t.Fatalf("artifacts list --json: %v\n%s", err, r)
			}
			if fs[0].SHA256 == "" {
				t.Fatalf("artifacts list --json: %+v has no SHA-256", fs[0])
			}
			return fs[0]
		}
		f1, f2 := list(run1), list(run2)
		if f1.Size != f2.Size || f1.SHA256 == f2.SHA256 {
			t.Fatalf("the runs' files: %+v and %+v; want one size and two hashes", f1, f2)
		}

		out := filepath.Join(t.TempDir(), "out")
		data := filepath.Join(out, "gen", "out", "data.txt")
		download := func(name, want string) result {
			t.Helper()
			r := c.dstack("", "artifacts", "download", name, "-o", out)
			if r.code != 0 {
				t.Fatalf("%s", r)
			}
			if got := readFile(t, data); got != want {
				t.Errorf("after downloading %s, data.txt = %q, want %q\n%s", name, got, want, r)
			}
			return r
		}
		download(run1, first)
		if r := download(run2, second); strings.Contains(r.stdout, "already downloaded") {
			t.Errorf("the second run's file was taken for the first's:\n%s", r)
		}
		if r := download(run2, second); !strings.Contains(r.stdout, "already downloaded") {
			t.Errorf("the same file again is downloaded again:\n%s", r)
		}

		// A download of the first run broke off: its .part holds the start
		// of the first run's file, tagged with what the server sent.
		if err := os.Remove(data); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(data+".part", []byte(first[:20]), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(data+".part.etag", []byte(c.artifactETag(t, f1)+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if r := download(run2, second); strings.Contains(r.stdout, "resumed") {
			t.Errorf("the first run's .part was resumed for the second's file:\n%s", r)
		}
		// Of the same run's file it is resumed.
		if err := os.Remove(data); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(data+".part", []byte(first[:20]), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(data+".part.etag", []byte(c.artifactETag(t, f1)+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if r := download(run1, first); !strings.Contains(r.stdout, "resumed at 20 B") {
			t.Errorf("a .part of the same file was not resumed:\n%s", r)
		}
		for _, p := range []string{data + ".part", data + ".part.etag"} {
			if _, err := os.Stat(p); !os.IsNotExist(err) {
				t.Errorf("%s left behind (%v)", p, err)
			}
		}
	})
}

// artifactETag asks the server for the entity tag of an artifact file, as
// a download receives it.
func (c *cluster) artifactETag(t *testing.T, f api.ArtifactFile) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, c.URL+api.PathPrefix+"/jobs/"+f.JobID+"/artifacts/"+f.Path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	req.Close = true // no idle connection left behind
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("ETag") == "" {
		t.Fatalf("GET %s: %s, ETag %q", req.URL, resp.Status, resp.Header.Get("ETag"))
	}
	return resp.Header.Get("ETag")
}
