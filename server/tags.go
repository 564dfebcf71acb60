package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/store"
)

// Tags name done runs of a user (`dstack tag RUN NAME`) so that workflows of
// later runs can use their artifacts (depends-on: [WORKFLOW:NAME]). The
// server resolves a tagged dependency when it accepts the run: the job's
// spec records the run and the job the tag named then (TaggedDependency's
// RunName and JobID), so moving or deleting the tag later changes nothing
// for runs already submitted.

// tagNamePattern is what a tag's name may be, as workflow names.
var tagNamePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$`)

func validTagName(name string) error {
	if !tagNamePattern.MatchString(name) {
		return invalid("%q is not a valid tag: use letters, digits, '-', '_' and '.', starting with a letter or digit, at most 100", name)
	}
	return nil
}

func (s *Server) tagRoutes(rt *router) {
	p := api.PathPrefix
	rt.member("GET "+p+"/tags", s.handleTagList)
	rt.member("PUT "+p+"/tags/{name}", s.handleTagPut)
	rt.member("DELETE "+p+"/tags/{name}", s.handleTagDelete)
}

func (s *Server) handleTagList(w http.ResponseWriter, r *http.Request, u *store.User) error {
	tags, err := s.store.TagList(r.Context(), store.TagListParams{UserID: u.ID})
	if err != nil {
		return fmt.Errorf("list tags: %w", err)
	}
	out := make([]api.Tag, 0, len(tags))
	for _, t := range tags {
		// One read per tag for its run's workflows: a user has few tags.
		at, err := s.toAPITag(r.Context(), t)
		if err != nil {
			return err
		}
		out = append(out, at)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) handleTagPut(w http.ResponseWriter, r *http.Request, u *store.User) error {
	name := r.PathValue("name")
	if err := validTagName(name); err != nil {
		return err
	}
	var req api.TagPutRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	if req.RunName == "" {
		return invalid("run_name is missing: name the run to tag (`dstack ps -a` lists your runs)")
	}
	run, err := s.store.RunGet(r.Context(), store.RunGetParams{Name: req.RunName, UserID: u.ID})
	if errors.Is(err, store.ErrNotFound) {
		return notFound("no run named %q: `dstack ps -a` lists your runs", req.RunName)
	}
	if err != nil {
		return fmt.Errorf("tag %q: %w", name, err)
	}
	if st, _ := runStatus(run.Jobs); st != api.StatusDone {
		return invalid("run %s is %s: only a done run can be tagged, as its artifacts are complete then", run.Name, st)
	}
	res, err := s.store.TagPut(r.Context(), store.TagPutParams{UserID: u.ID, Name: name, RunID: run.ID, Force: req.Force, Now: s.cfg.Now()})
	switch {
	case errors.Is(err, store.ErrConflict):
		other := "another run"
		if t, err := s.store.TagGet(r.Context(), store.TagGetParams{UserID: u.ID, Name: name}); err == nil {
			other = "run " + t.RunName
		}
		return api.Errorf(http.StatusConflict, api.CodeConflict,
			"tag %q already names %s: move it with `dstack tag %s %s --force`, or pick another name", name, other, run.Name, name)
	case errors.Is(err, store.ErrNotFound):
		return notFound("no run named %q: `dstack ps -a` lists your runs", req.RunName)
	case err != nil:
		return fmt.Errorf("tag %q: %w", name, err)
	}
	out := api.TagPutResponse{Tag: apiTag(res.Tag, run), Created: res.Created}
	if res.Previous != nil {
		out.PreviousRunName = res.Previous.RunName
	}
	status := http.StatusOK
	if res.Created {
		status = http.StatusCreated
	}
	s.log.Info("run tagged", "tag", name, "run", run.Name, "created", res.Created, "previous", out.PreviousRunName, "user", u.Name)
	writeJSON(w, status, out)
	return nil
}

func (s *Server) handleTagDelete(w http.ResponseWriter, r *http.Request, u *store.User) error {
	name := r.PathValue("name")
	t, err := s.store.TagDelete(r.Context(), store.TagDeleteParams{UserID: u.ID, Name: name})
	if errors.Is(err, store.ErrNotFound) {
		return noTag(name)
	}
	if err != nil {
		return fmt.Errorf("delete tag %q: %w", name, err)
	}
	at, err := s.toAPITag(r.Context(), t)
	if err != nil {
		return err
	}
	s.log.Info("tag deleted", "tag", name, "run", t.RunName, "user", u.Name)
	writeJSON(w, http.StatusOK, at)
	return nil
}

func noTag(name string) error {
	return notFound("you have no tag %q: `dstack tags` lists your tags", name)
}

// toAPITag converts a tag, reading its run for the run's workflows.
func (s *Server) toAPITag(ctx context.Context, t *store.Tag) (api.Tag, error) {
	run, err := s.store.RunGet(ctx, store.RunGetParams{Name: t.RunName, UserID: t.UserID})
	if err != nil {
		return api.Tag{}, fmt.Errorf("tag %q: run %s: %w", t.Name, t.RunName, err)
	}
	return apiTag(t, run), nil
}

func apiTag(t *store.Tag, run *store.Run) api.Tag {
	out := api.Tag{Name: t.Name, RunName: t.RunName, Workflow: t.Workflow, CreatedAt: t.CreatedAt, Workflows: []string{}}
	for _, j := range run.Jobs {
		out.Workflows = append(out.Workflows, j.Workflow)
	}
	return out
}

// validateTaggedDeps checks the form of a job's tagged dependencies: valid
// names, and each workflow once among all its dependencies.
func validateTaggedDeps(j api.JobSpec) error {
	seen := map[string]bool{}
	for _, d := range j.DependsOn {
		seen[d] = true
	}
	for _, d := range j.DependsOnTags {
		if !workflowNamePattern.MatchString(d.Workflow) {
			return invalid("workflow %q: tagged dependency %q: %q is not a workflow name", j.Workflow, d, d.Workflow)
		}
		if !tagNamePattern.MatchString(d.Tag) {
			return invalid("workflow %q: tagged dependency %q: %q is not a tag: use letters, digits, '-', '_' and '.', at most 100", j.Workflow, d, d.Tag)
		}
		if seen[d.Workflow] {
			return invalid("workflow %q depends on workflow %q twice (%s among them): keep one", j.Workflow, d.Workflow, d)
		}
		seen[d.Workflow] = true
	}
	return nil
}

// resolveTaggedDeps points each tagged dependency of jobs at the run the
// user's tag names now and at its job of the workflow, which must be done.
// An unknown tag, or a tagged run without the workflow, is a 400 that says
// how to fix it; jobs is then left as it was.
func (s *Server) resolveTaggedDeps(ctx context.Context, u *store.User, jobs []api.JobSpec) error {
	runs := map[string]*store.Run{} // by tag
	resolved := make([][]api.TaggedDependency, len(jobs))
	for i, j := range jobs {
		for _, d := range j.DependsOnTags {
			run, ok := runs[d.Tag]
			if !ok {
				t, err := s.store.TagGet(ctx, store.TagGetParams{UserID: u.ID, Name: d.Tag})
				if errors.Is(err, store.ErrNotFound) {
					return invalid("workflow %q depends on %s, but you have no tag %q: `dstack tags` lists your tags; tag a done run with `dstack tag RUN %s`",
						j.Workflow, d, d.Tag, d.Tag)
				}
				if err != nil {
					return fmt.Errorf("tag %q: %w", d.Tag, err)
				}
				if run, err = s.store.RunGet(ctx, store.RunGetParams{Name: t.RunName, UserID: u.ID}); err != nil {
					return fmt.Errorf("tag %q: run %s: %w", d.Tag, t.RunName, err)
				}
				runs[d.Tag] = run
			}
			var dep *store.Job
			names := make([]string, 0, len(run.Jobs))
			for _, rj := range run.Jobs {
				names = append(names, rj.Workflow)
				if rj.Workflow == d.Workflow {
					dep = rj
				}
			}
			switch {
			case dep == nil:
				return invalid("workflow %q depends on %s, but run %s, which tag %q names, has no workflow %q; its workflows are: %s",
					j.Workflow, d, run.Name, d.Tag, d.Workflow, strings.Join(names, ", "))
			case dep.Status != api.StatusDone:
				return invalid("workflow %q depends on %s, but %s of run %s is %s, not done: tag a done run with `dstack tag RUN %s --force`",
					j.Workflow, d, d.Workflow, run.Name, dep.Status, d.Tag)
			}
			resolved[i] = append(resolved[i], api.TaggedDependency{Workflow: d.Workflow, Tag: d.Tag, RunName: run.Name, JobID: dep.ID})
		}
	}
	for i := range jobs {
		jobs[i].DependsOnTags = resolved[i]
	}
	return nil
}
