package workflow

import (
	"errors"
	"fmt"
	"maps"
	"path"
	"regexp"
	"slices"
	"strings"

	"github.com/dstackai/dstack/api"
)

// check validates what spans workflows: names, dependencies, cycles, and
// resolves every workflow once with its default variables so that a file
// Parse accepts always resolves.
func (p *parser) check(f *File) {
	lines := map[string]int{}
	for _, w := range f.workflows {
		if w.name == "" {
			continue
		}
		if first, dup := lines[w.name]; dup {
			p.add(w.line, w.name, "name", "defined twice (first at line %d); rename one of them", first)
			continue
		}
		lines[w.name] = w.line
		f.byName[w.name] = w
	}
	for _, w := range f.workflows {
		for _, d := range w.dependsOn {
			if d.tag != "" {
				continue // a workflow of an earlier run, which this file need not have
			}
			if _, ok := f.byName[d.name]; !ok {
				p.add(d.line, w.name, "depends-on", "unknown workflow %q; the workflows are: %s", d.name, strings.Join(f.Names(), ", "))
			}
		}
	}
	if len(p.errs) > 0 {
		return
	}
	if cycle := findCycle(f); cycle != nil {
		w := f.byName[cycle[0]]
		p.add(w.line, w.name, "depends-on", "dependency cycle %s; remove one of these dependencies", strings.Join(cycle, " -> "))
		return
	}
	for _, w := range f.workflows {
		_, errs := f.build(w, nil)
		p.errs = append(p.errs, errs...)
	}
	if len(p.errs) > maxErrors {
		p.errs = p.errs[:maxErrors]
	}
}

// findCycle returns a dependency cycle as a path whose last name is its
// first, or nil. Every dependency must name a workflow of f.
func findCycle(f *File) []string {
	const (
		unseen = iota
		visiting
		done
	)
	state := map[string]int{}
	var stack []string
	var visit func(w *workflow) []string
	visit = func(w *workflow) []string {
		state[w.name] = visiting
		stack = append(stack, w.name)
		for _, d := range w.dependsOn {
			if d.tag != "" {
				continue
			}
			switch state[d.name] {
			case visiting:
				i := slices.Index(stack, d.name)
				return append(slices.Clone(stack[i:]), d.name)
			case unseen:
				if c := visit(f.byName[d.name]); c != nil {
					return c
				}
			}
		}
		stack = stack[:len(stack)-1]
		state[w.name] = done
		return nil
	}
	for _, w := range f.workflows {
		if state[w.name] == unseen {
			if c := visit(w); c != nil {
				return c
			}
		}
	}
	return nil
}

// Resolve returns the job specs of a run of the named workflow: the
// workflow and every workflow it depends on, transitively, dependencies
// first (ties in file order), with variables substituted. A dependency on a
// tagged run (WORKFLOW:TAG) adds no job: it is in the spec's DependsOnTags,
// for the server to find. overrides set
// variables by name, over the workflows' own values and the top-level ones;
// each must name a variable that a workflow of the run can see.
func (f *File) Resolve(name string, overrides map[string]string) ([]api.JobSpec, error) {
	order, err := f.closure(name)
	if err != nil {
		return nil, err
	}
	known := map[string]bool{}
	for _, v := range f.vars {
		known[v.name] = true
	}
	for _, w := range order {
		for _, v := range w.vars {
			known[v.name] = true
		}
	}
	for _, k := range slices.Sorted(maps.Keys(overrides)) {
		if known[k] {
			continue
		}
		if len(known) == 0 {
			return nil, fmt.Errorf("unknown variable %q: workflow %q and its dependencies declare no variables; declare it under variables: in %s", k, name, f.Path)
		}
		return nil, fmt.Errorf("unknown variable %q for workflow %q; the known variables are: %s", k, name, strings.Join(slices.Sorted(maps.Keys(known)), ", "))
	}
	specs := make([]api.JobSpec, 0, len(order))
	var errs []error
	for _, w := range order {
		spec, werrs := f.build(w, overrides)
		errs = append(errs, werrs...)
		specs = append(specs, spec)
	}
	if len(errs) > 0 {
		return nil, joinErrors(errs)
	}
	return specs, nil
}

// Variables returns the variables a run of the named workflow can be given,
// with their default values (where workflows of the run disagree, the named
// workflow's value wins, then its dependencies' in run order).
func (f *File) Variables(name string) (map[string]string, error) {
	order, err := f.closure(name)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for i := len(order) - 1; i >= 0; i-- {
		for k, v := range f.visible(order[i], nil) {
			if _, ok := out[k]; !ok {
				out[k] = v
			}
		}
	}
	return out, nil
}

// closure returns the named workflow and its transitive dependencies in
// topological order, ties broken by the order of the file.
func (f *File) closure(name string) ([]*workflow, error) {
	target, ok := f.byName[name]
	if !ok {
		return nil, fmt.Errorf("no workflow %q in %s; the workflows are: %s", name, f.Path, strings.Join(f.Names(), ", "))
	}
	in := map[string]bool{}
	var collect func(w *workflow)
	collect = func(w *workflow) {
		if in[w.name] {
			return
		}
		in[w.name] = true
		for _, d := range w.dependsOn {
			if d.tag == "" {
				collect(f.byName[d.name])
			}
		}
	}
	collect(target)
	// Kahn's algorithm, always taking the first ready workflow of the file.
	placed := map[string]bool{}
	order := make([]*workflow, 0, len(in))
	for len(order) < len(in) {
		progress := false
		for _, w := range f.workflows {
			if !in[w.name] || placed[w.name] {
				continue
			}
			ready := true
			for _, d := range w.dependsOn {
				if d.tag == "" && !placed[d.name] {
					ready = false
					break
				}
			}
			if ready {
				placed[w.name] = true
				order = append(order, w)
				progress = true
				break
			}
		}
		if !progress {
			return nil, fmt.Errorf("workflow %q: dependency cycle", name) // Parse rules this out
		}
	}
	return order, nil
}

// visible returns the variables w sees: the top-level ones, its own over
// them, and the overrides it can see over both.
func (f *File) visible(w *workflow, overrides map[string]string) map[string]string {
	vars := map[string]string{}
	for _, v := range f.vars {
		vars[v.name] = v.value
	}
	for _, v := range w.vars {
		vars[v.name] = v.value
	}
	for k, v := range overrides {
		if _, ok := vars[k]; ok {
			vars[k] = v
		}
	}
	return vars
}

var pythonVersionPattern = regexp.MustCompile(`^[0-9]+(\.[0-9]+){0,2}$`)

// build turns a workflow into a job spec with the given overrides.
func (f *File) build(w *workflow, overrides map[string]string) (api.JobSpec, []error) {
	vars := f.visible(w, overrides)
	var errs []error
	report := func(line int, field, format string, args ...any) {
		errs = append(errs, &Error{File: f.Path, Line: line, Workflow: w.name, Field: field, Msg: fmt.Sprintf(format, args...)})
	}
	sub := func(t text, field string) string {
		s, err := expand(t.s, func(name string) (string, bool) {
			v, ok := vars[name]
			return v, ok
		})
		if err == nil {
			return s
		}
		if u, ok := errors.AsType[*undefinedError](err); ok {
			known := "none are declared"
			if len(vars) > 0 {
				known = "known: " + strings.Join(slices.Sorted(maps.Keys(vars)), ", ")
			}
			report(t.line, field, "undefined variable %q (%s); declare it under variables: or fix the name", u.name, known)
		} else {
			report(t.line, field, "%v", err)
		}
		return ""
	}

	spec := api.JobSpec{
		Workflow:  w.name,
		Provider:  w.provider,
		Resources: w.resources,
		Commands:  []string{},
	}
	if w.resources.GPU != nil {
		g := *w.resources.GPU
		spec.Resources.GPU = &g
	}
	if w.image.s != "" {
		spec.Image = strings.TrimSpace(sub(w.image, "image"))
		if spec.Image == "" || strings.ContainsAny(spec.Image, " \t\n") {
			if len(errs) == 0 {
				report(w.image.line, "image", "%q is not a Docker image name; give one such as python:3.12", spec.Image)
			}
		}
	}
	var commands []string
	for _, c := range w.commands {
		commands = append(commands, sub(c, "commands"))
	}
	if w.provider == "python" {
		version := DefaultPythonVersion
		if w.version.s != "" {
			version = strings.TrimSpace(sub(w.version, "version"))
			if !pythonVersionPattern.MatchString(version) {
				report(w.version.line, "version", `%q is not a Python version; give one such as 3.11`, version)
			}
		}
		spec.Image = "python:" + version
		var pre []string
		if w.requirements.s != "" {
			pre = append(pre, "pip install -r "+shellQuote(sub(w.requirements, "requirements")))
		}
		commands = append(pre, commands...)
		if w.file.s != "" {
			words := []string{"python3", shellQuote(sub(w.file, "file"))}
			for _, a := range w.args {
				words = append(words, shellQuote(sub(a, "args")))
			}
			commands = append(commands, strings.Join(words, " "))
		}
	}
	if commands != nil {
		spec.Commands = commands
	}
	for _, e := range w.env {
		if spec.Env == nil {
			spec.Env = map[string]string{}
		}
		spec.Env[e.key] = sub(e.value, "env."+e.key)
	}
	for _, d := range w.dependsOn {
		if d.tag != "" {
			spec.DependsOnTags = append(spec.DependsOnTags, api.TaggedDependency{Workflow: d.name, Tag: d.tag})
			continue
		}
		spec.DependsOn = append(spec.DependsOn, d.name)
	}
	for _, a := range w.artifacts {
		p := strings.TrimSpace(sub(a, "artifacts"))
		clean := path.Clean(p)
		switch {
		case p == "":
			if len(errs) == 0 {
				report(a.line, "artifacts", "a path is empty; give a path relative to the working directory")
			}
			continue
		case path.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, "../"):
			report(a.line, "artifacts", "%q is outside the working directory; give a path relative to it, such as model", p)
			continue
		}
		if !slices.Contains(spec.Artifacts, clean) {
			spec.Artifacts = append(spec.Artifacts, clean)
		}
	}
	if len(w.checkpoints.paths) > 0 {
		spec.Checkpoints = w.checkpoints.paths
		spec.CheckpointInterval = api.Duration(w.checkpoints.interval)
		spec.KeepCheckpoints = w.checkpoints.keep
	}
	if len(vars) > 0 {
		spec.Variables = vars
	}
	return spec, errs
}
