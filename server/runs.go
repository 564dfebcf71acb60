package server

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/blob"
	"github.com/dstackai/dstack/store"
)

// codeKey is where a code archive is kept, by content.
func codeKey(codeID string) string { return "code/" + codeID + ".tar.gz" }

var codeIDPattern = regexp.MustCompile(`^[0-9a-f]{64}$`)

// handleCodeUpload stores a code archive under its SHA-256.
func (s *Server) handleCodeUpload(w http.ResponseWriter, r *http.Request, u *store.User) error {
	if r.ContentLength > s.cfg.MaxCodeSize {
		return tooLargeCode(r.ContentLength, s.cfg.MaxCodeSize)
	}
	if err := s.storage.admit(); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(s.cfg.DataDir, "upload-*")
	if err != nil {
		return fmt.Errorf("code upload: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), io.LimitReader(r.Body, s.cfg.MaxCodeSize+1))
	if isStorageFailure(err) {
		return fmt.Errorf("code upload: %w", err)
	}
	if err != nil {
		return invalid("code upload broke off after %d bytes: %v", n, err)
	}
	if n > s.cfg.MaxCodeSize {
		return tooLargeCode(n, s.cfg.MaxCodeSize)
	}
	if n == 0 {
		return invalid("code archive is empty: send a gzip'd tar of the working directory")
	}
	id := hex.EncodeToString(h.Sum(nil))
	// The user's own archive counts once, however often it is uploaded;
	// another user's copy of the same bytes counts for this user too.
	add := n
	if c, err := s.store.CodeGet(r.Context(), store.CodeGetParams{UserID: u.ID, CodeID: id}); err == nil {
		add = n - c.Size
	} else if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	if err := s.checkQuota(r.Context(), u, add); err != nil {
		return err
	}
	if err := s.recordCode(r, u, id, n); err != nil {
		return err
	}
	if _, err := s.blobs.Stat(r.Context(), codeKey(id)); err != nil {
		if _, err := tmp.Seek(0, io.SeekStart); err != nil {
			return err
		}
		if _, err := s.blobs.Put(r.Context(), codeKey(id), tmp); err != nil {
			return fmt.Errorf("store code: %w", err)
		}
	}
	s.storage.succeeded()
	writeJSON(w, http.StatusCreated, api.CodeUploadResponse{CodeID: id, Size: n})
	return nil
}

// codeRemovalWait bounds how long an upload waits for the bytes of the
// same archive, deleted meanwhile, to be removed before storing them again.
const codeRemovalWait = 10 * time.Second

// recordCode records the user's upload of a code archive. While the
// archive's bytes are being removed (its last holder deleted it), it waits
// for that to end, so as not to store them again under a removal.
func (s *Server) recordCode(r *http.Request, u *store.User, id string, size int64) error {
	deadline := time.Now().Add(codeRemovalWait)
	for wait := 10 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		_, err := s.store.CodePut(r.Context(), store.CodePutParams{UserID: u.ID, CodeID: id, Size: size, Now: s.cfg.Now()})
		if !errors.Is(err, store.ErrConflict) {
			return err
		}
		if time.Now().After(deadline) {
			return api.Errorf(http.StatusServiceUnavailable, api.CodeUnavailable,
				"code archive %s is being removed from the server's storage; upload it again in a moment", id)
		}
		t := time.NewTimer(wait)
		select {
		case <-r.Context().Done():
			t.Stop()
			return r.Context().Err()
		case <-t.C:
		}
	}
}

func tooLargeCode(n, max int64) error {
	return api.Errorf(http.StatusRequestEntityTooLarge, api.CodeTooLarge,
		"code archive is larger than the server's limit of %s: list big files and folders (data, checkpoints) in .dstackignore, or raise the limit with `dstack server --max-code-size`", byteSize(max))
}

// byteSize writes n bytes in MiB when that is exact, in bytes otherwise.
func byteSize(n int64) string {
	if n >= 1<<20 && n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d bytes", n)
}

var workflowNamePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$`)

// validateJobs checks a submitted run: names unique and well-formed,
// providers known, commands present, dependencies inside the run and
// acyclic, tagged dependencies well-formed (resolveTaggedDeps looks them
// up). It returns the jobs in dependency order.
func validateJobs(req api.RunSubmitRequest) ([]api.JobSpec, error) {
	if len(req.Jobs) == 0 {
		return nil, invalid("a run needs at least one job")
	}
	if len(req.Jobs) > 1000 {
		return nil, invalid("a run may have at most 1000 jobs, this one has %d", len(req.Jobs))
	}
	byName := map[string]api.JobSpec{}
	for i, j := range req.Jobs {
		if !workflowNamePattern.MatchString(j.Workflow) {
			return nil, invalid("jobs[%d]: workflow name %q: use letters, digits, '-', '_' and '.', at most 100", i, j.Workflow)
		}
		if _, dup := byName[j.Workflow]; dup {
			return nil, invalid("workflow %q appears twice in the run", j.Workflow)
		}
		switch j.Provider {
		case "bash", "docker", "python":
		default:
			return nil, invalid("workflow %q: unknown provider %q: use bash, docker or python", j.Workflow, j.Provider)
		}
		if len(j.Commands) == 0 {
			return nil, invalid("workflow %q has no commands", j.Workflow)
		}
		if j.Provider == "docker" && j.Image == "" {
			return nil, invalid("workflow %q: the docker provider needs an image", j.Workflow)
		}
		if j.Resources.CPU < 0 || j.Resources.MemoryMiB < 0 || j.Resources.GPUCount() < 0 {
			return nil, invalid("workflow %q: resources cannot be negative", j.Workflow)
		}
		for _, a := range j.Artifacts {
			if !validRelPath(a) {
				return nil, invalid("workflow %q: artifact path %q must be relative and stay inside the working directory", j.Workflow, a)
			}
		}
		if err := validateCheckpoints(j); err != nil {
			return nil, err
		}
		if err := validateTaggedDeps(j); err != nil {
			return nil, err
		}
		byName[j.Workflow] = j
	}
	if _, ok := byName[req.Workflow]; !ok {
		return nil, invalid("the run's workflow %q is not among its jobs", req.Workflow)
	}
	// Topological order, keeping the given order among equals.
	var order []api.JobSpec
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(name string, path []string) error
	visit = func(name string, path []string) error {
		switch state[name] {
		case 2:
			return nil
		case 1:
			return invalid("dependency cycle: %s", strings.Join(append(path, name), " -> "))
		}
		state[name] = 1
		for _, d := range byName[name].DependsOn {
			if _, ok := byName[d]; !ok {
				return invalid("workflow %q depends on %q, which is not in the run", name, d)
			}
			if err := visit(d, append(path, name)); err != nil {
				return err
			}
		}
		state[name] = 2
		order = append(order, byName[name])
		return nil
	}
	for _, j := range req.Jobs {
		if err := visit(j.Workflow, nil); err != nil {
			return nil, err
		}
	}
	return order, nil
}

func validRelPath(p string) bool {
	p = strings.TrimSuffix(p, "/")
	if p == "" || p == "." {
		return false
	}
	return blob.ValidKey(p)
}

func (s *Server) handleRunSubmit(w http.ResponseWriter, r *http.Request, u *store.User) error {
	var req api.RunSubmitRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	if err := s.storage.admit(); err != nil {
		return err
	}
	jobs, err := validateJobs(req)
	if err != nil {
		return err
	}
	if !codeIDPattern.MatchString(req.CodeID) {
		return invalid("code_id %q is not a code archive id: upload the code first (POST /api/v1/code)", req.CodeID)
	}
	// Another user's archive is answered as one the server does not have.
	noCode := invalid("no code archive %s on the server: upload it first (POST /api/v1/code)", req.CodeID)
	if _, err := s.store.CodeGet(r.Context(), store.CodeGetParams{UserID: u.ID, CodeID: req.CodeID}); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return noCode
		}
		return err
	}
	if _, err := s.blobs.Stat(r.Context(), codeKey(req.CodeID)); err != nil {
		return noCode
	}
	if err := s.checkQuota(r.Context(), u, 0); err != nil {
		return err
	}
	if err := s.resolveTaggedDeps(r.Context(), u, jobs); err != nil {
		return err
	}
	p := store.RunCreateParams{ID: newID(), UserID: u.ID, Workflow: req.Workflow, CodeID: req.CodeID, Now: s.cfg.Now(),
		ArtifactStore: s.runArtifactStore(), RequireCode: true}
	for _, j := range jobs {
		p.Jobs = append(p.Jobs, store.JobCreate{ID: newID(), Spec: j})
	}
	var run *store.Run
	for attempt := 0; ; attempt++ {
		p.Name = runName(attempt)
		run, err = s.store.RunCreate(r.Context(), p)
		if errors.Is(err, store.ErrConflict) && attempt < 20 {
			continue
		}
		if errors.Is(err, store.ErrNotFound) {
			return noCode // deleted, unused, since it was checked
		}
		if err != nil {
			return fmt.Errorf("create run: %w", err)
		}
		break
	}
	s.queue.offer(u.ID, pendingJobs(run.Jobs), false)
	s.wakeAutoscaler()
	s.events.publish(u.ID, api.EventRuns)
	s.log.Info("run submitted", "run", run.Name, "workflow", run.Workflow, "jobs", len(run.Jobs), "user", u.Name)
	writeJSON(w, http.StatusCreated, toAPIRun(run))
	return nil
}

var (
	adjectives = []string{"amber", "bold", "brave", "bright", "calm", "clever", "cool", "crisp", "eager", "fast", "gentle", "glad", "grand", "happy", "keen", "kind", "lively", "lucky", "merry", "neat", "nimble", "proud", "quick", "quiet", "rapid", "sharp", "shiny", "smart", "steady", "swift", "tidy", "wise"}
	animals    = []string{"ant", "badger", "bat", "bear", "bee", "cat", "crane", "deer", "dingo", "dove", "eagle", "falcon", "fox", "frog", "gecko", "hare", "heron", "ibis", "koala", "lemur", "lion", "lynx", "mole", "moose", "newt", "otter", "owl", "panda", "puma", "seal", "swan", "tiger", "wolf", "yak", "zebra"}
)

// runName makes a readable name; later attempts widen the numeric suffix so
// that collisions become unlikely.
func runName(attempt int) string {
	n := rand.IntN(100 * (attempt + 1) * (attempt + 1))                                                         //nolint:gosec // run names, not secrets
	return fmt.Sprintf("%s-%s-%d", adjectives[rand.IntN(len(adjectives))], animals[rand.IntN(len(animals))], n) //nolint:gosec // run names, not secrets
}

// recentRuns is how long a finished run stays in `dstack ps` without -a.
const recentRuns = time.Hour

// maxRunPage is the most runs GET /runs answers at once, and how many it
// answers without ?limit.
const maxRunPage = 1000

// handleRunList answers a page of the user's runs, newest first, with
// ?limit=N of them at most, continuing after ?after=CURSOR; the cursor of
// the next page, when more runs follow, is in the NextCursorHeader.
func (s *Server) handleRunList(w http.ResponseWriter, r *http.Request, u *store.User) error {
	q := r.URL.Query()
	p := store.RunListParams{UserID: u.ID, Limit: maxRunPage}
	if q.Get("all") != "true" {
		p.FinishedAfter = s.cfg.Now().Add(-recentRuns)
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxRunPage {
			return invalid("limit %q: give a number of runs from 1 to %d", v, maxRunPage)
		}
		p.Limit = n
	}
	if v := q.Get("after"); v != "" {
		c, err := parseRunCursor(v)
		if err != nil {
			return invalid("after %q is not a cursor of this listing: pass the %s header of the previous page as it is", v, api.NextCursorHeader)
		}
		p.After = c
	}
	limit := p.Limit
	p.Limit++ // one more says whether another page follows
	runs, err := s.store.RunList(r.Context(), p)
	if err != nil {
		return fmt.Errorf("list runs: %w", err)
	}
	if len(runs) > limit {
		runs = runs[:limit]
		w.Header().Set(api.NextCursorHeader, formatRunCursor(store.CursorOf(runs[limit-1])))
	}
	out := make([]api.Run, 0, len(runs))
	ids := make([]string, 0, len(runs))
	for _, run := range runs {
		out = append(out, toAPIRun(run))
		ids = append(ids, run.ID)
	}
	s.attachCheckpoints(r.Context(), out, ids)
	costs, _, err := s.runCosts(r.Context(), runs)
	if err != nil {
		return err
	}
	withCosts(out, costs)
	writeJSON(w, http.StatusOK, out)
	return nil
}

// formatRunCursor writes a cursor as an opaque URL-safe word.
func formatRunCursor(c *store.RunCursor) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(c.SubmittedAt.UnixMicro(), 10) + "." + c.ID))
}

// parseRunCursor reads a cursor formatRunCursor wrote.
func parseRunCursor(v string) (*store.RunCursor, error) {
	b, err := base64.RawURLEncoding.DecodeString(v)
	if err != nil {
		return nil, err
	}
	at, id, ok := strings.Cut(string(b), ".")
	us, err := strconv.ParseInt(at, 10, 64)
	if !ok || err != nil || id == "" || !utf8.ValidString(id) {
		return nil, errors.New("malformed cursor")
	}
	return &store.RunCursor{SubmittedAt: time.UnixMicro(us), ID: id}, nil
}

func (s *Server) userRun(r *http.Request, u *store.User) (*store.Run, error) {
	name := r.PathValue("name")
	p := store.RunGetParams{Name: name, UserID: u.ID}
	if u.Admin {
		p.UserID = "" // an admin reads and stops every user's runs
	}
	run, err := s.store.RunGet(r.Context(), p)
	if errors.Is(err, store.ErrNotFound) {
		return nil, notFound("no run named %q: `dstack ps -a` lists your runs", name)
	}
	return run, err
}

func (s *Server) handleRunGet(w http.ResponseWriter, r *http.Request, u *store.User) error {
	run, err := s.userRun(r, u)
	if err != nil {
		return err
	}
	out := []api.Run{toAPIRun(run)}
	s.attachCheckpoints(r.Context(), out, []string{run.ID})
	costs, _, err := s.runCosts(r.Context(), []*store.Run{run})
	if err != nil {
		return err
	}
	withCosts(out, costs)
	writeJSON(w, http.StatusOK, out[0])
	return nil
}

func (s *Server) handleRunStop(w http.ResponseWriter, r *http.Request, u *store.User) error {
	var req api.StopRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	run, err := s.userRun(r, u)
	if err != nil {
		return err
	}
	jobs, err := s.store.JobRequestStop(r.Context(), store.JobRequestStopParams{RunID: run.ID, Abort: req.Abort, Now: s.cfg.Now()})
	if err != nil {
		return fmt.Errorf("stop run: %w", err)
	}
	for _, j := range jobs {
		s.queue.wake(jobKey(j.ID))
		if j.Status.Finished() {
			s.finishLog(j.ID)
		}
	}
	run.Jobs = jobs
	s.events.publish(run.UserID, api.EventRuns, api.EventRunners)
	if run.UserID != u.ID {
		s.events.publish(u.ID, api.EventRuns)
	}
	s.log.Info("run stop requested", "run", run.Name, "abort", req.Abort)
	writeJSON(w, http.StatusOK, toAPIRun(run))
	return nil
}

// toAPIRun converts a run; its status is derived from its jobs'.
func toAPIRun(run *store.Run) api.Run {
	out := api.Run{Name: run.Name, Workflow: run.Workflow, User: run.UserName, SubmittedAt: run.SubmittedAt, Jobs: make([]api.Job, 0, len(run.Jobs))}
	for _, j := range run.Jobs {
		out.Jobs = append(out.Jobs, toAPIJob(j))
	}
	out.Status, out.FinishedAt = runStatus(run.Jobs)
	return out
}

// activeRank orders unfinished states: a run shows its most advanced job's.
var activeRank = map[api.JobStatus]int{
	api.StatusSubmitted: 1, api.StatusInterrupted: 2, api.StatusPending: 3, api.StatusProvisioning: 4,
	api.StatusDownloading: 5, api.StatusUploading: 6, api.StatusRunning: 7,
}

// runStatus aggregates job states: while any job is unfinished, the most
// advanced unfinished state; then failed, aborted or stopped if any job
// ended so, else done.
func runStatus(jobs []*store.Job) (api.JobStatus, *time.Time) {
	var (
		best     api.JobStatus
		finished *time.Time
		ended    = map[api.JobStatus]bool{}
	)
	for _, j := range jobs {
		if !j.Status.Finished() {
			if activeRank[j.Status] > activeRank[best] {
				best = j.Status
			}
			continue
		}
		ended[j.Status] = true
		if j.FinishedAt != nil && (finished == nil || j.FinishedAt.After(*finished)) {
			finished = j.FinishedAt
		}
	}
	if best != "" {
		return best, nil
	}
	for _, st := range []api.JobStatus{api.StatusFailed, api.StatusAborted, api.StatusStopped} {
		if ended[st] {
			return st, finished
		}
	}
	return api.StatusDone, finished
}

func toAPIJob(j *store.Job) api.Job {
	return api.Job{
		ID: j.ID, RunName: j.RunName, Workflow: j.Workflow, Status: j.Status, StatusReason: j.StatusReason,
		RunnerID: j.RunnerID, RunnerName: j.RunnerName, Attempt: j.Attempt, ExitCode: j.ExitCode,
		SubmittedAt: j.SubmittedAt, StartedAt: j.StartedAt, UploadingAt: j.UploadingAt, FinishedAt: j.FinishedAt, Spec: j.Spec,
		LogMissing: j.LogMissing,
	}
}

// pendingJobs counts the jobs that wait for a runner: as many runners are
// woken for them.
func pendingJobs(jobs []*store.Job) int {
	n := 0
	for _, j := range jobs {
		if j.Status == api.StatusPending {
			n++
		}
	}
	return n
}
