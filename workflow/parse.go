package workflow

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/dstackai/dstack/api"
)

// maxErrors bounds how many problems one Parse reports.
const maxErrors = 20

// mergeBudget bounds the work spent following YAML merge keys (<<), which
// anchors can otherwise make exponential.
const mergeBudget = 10000

// text is a string of the file that may hold variable references, with the
// line it came from.
type text struct {
	s    string
	line int
}

type variable struct {
	name, value string
	line        int
}

type envVar struct {
	key   string
	value text
}

// dependency is one entry of depends-on: a workflow of the same run, or,
// with a tag, the workflow of the user's earlier run that the tag names.
type dependency struct {
	name string
	tag  string // empty: a workflow of this run
	line int
}

// workflow is one entry of workflows:, as written.
type workflow struct {
	name         string
	line         int
	provider     string
	image        text
	commands     []text
	file         text
	args         []text
	requirements text
	version      text
	dependsOn    []dependency
	vars         []variable
	resources    api.Resources
	artifacts    []text
	env          []envVar
	checkpoints  checkpoints
}

// parser collects problems as it walks the document.
type parser struct {
	file   string
	errs   []error
	budget int
}

func (p *parser) add(line int, wf, field, format string, args ...any) {
	if len(p.errs) == maxErrors {
		p.errs = append(p.errs, &Error{File: p.file, Msg: "too many problems, stopping here"})
	}
	if len(p.errs) > maxErrors {
		return
	}
	p.errs = append(p.errs, &Error{File: p.file, Line: line, Workflow: wf, Field: field, Msg: fmt.Sprintf(format, args...)})
}

// Parse parses and validates a workflows file. filename is only used in
// messages. Every problem found is reported, each as an *Error, joined.
func Parse(filename string, data []byte) (*File, error) {
	p := &parser{file: filename}
	var doc yaml.Node
	protected, restore := protectRefs(data)
	if err := unmarshal(protected, &doc); err != nil {
		return nil, p.yamlError(protected, err)
	}
	restoreRefs(&doc, restore)
	f := &File{Path: filename, byName: map[string]*workflow{}}
	if doc.Kind == 0 || len(doc.Content) == 0 || isNull(doc.Content[0]) {
		p.add(0, "", "", "the file is empty; it needs a workflows: list (run `dstack init` for a sample)")
		return nil, p.err()
	}
	root := deref(doc.Content[0])
	if root.Kind != yaml.MappingNode {
		p.add(root.Line, "", "", "expected a mapping with a workflows: list, found %s", kindName(root))
		return nil, p.err()
	}
	var seenWorkflows bool
	for _, kv := range p.pairs(root, "", "") {
		switch kv.key.Value {
		case "workflows":
			seenWorkflows = true
			p.parseWorkflows(f, kv.val)
		case "variables":
			f.vars = p.parseVariables(kv.val, "", "variables")
		default:
			if strings.HasPrefix(kv.key.Value, "x-") {
				continue // extension keys, a home for YAML anchors
			}
			p.unknownKey(kv.key, "", "", []string{"workflows", "variables"})
		}
	}
	if !seenWorkflows {
		p.add(root.Line, "", "", "missing workflows: add a workflows: list (run `dstack init` for a sample)")
	}
	if len(p.errs) > 0 {
		return nil, p.err()
	}
	p.check(f)
	if len(p.errs) > 0 {
		return nil, p.err()
	}
	return f, nil
}

func (p *parser) err() error {
	if len(p.errs) == 0 {
		return nil
	}
	if len(p.errs) == 1 {
		return p.errs[0]
	}
	return joinErrors(p.errs)
}

// joinedErrors is errors.Join without its extra allocation of messages; it
// keeps the same Unwrap() []error so that errors.As finds each *Error.
type joinedErrors []error

func joinErrors(errs []error) error { return joinedErrors(slices.Clone(errs)) }

func (j joinedErrors) Error() string {
	msgs := make([]string, len(j))
	for i, e := range j {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "\n")
}

func (j joinedErrors) Unwrap() []error { return j }

func (p *parser) parseWorkflows(f *File, n *yaml.Node) {
	n = deref(n)
	if n.Kind != yaml.SequenceNode {
		p.add(n.Line, "", "workflows", "expected a list of workflows (each starting with `- name: ...`), found %s", kindName(n))
		return
	}
	if len(n.Content) == 0 {
		p.add(n.Line, "", "workflows", "the list is empty; add at least one workflow (run `dstack init` for a sample)")
	}
	for _, item := range n.Content {
		if w := p.parseWorkflow(item); w != nil {
			f.workflows = append(f.workflows, w)
		}
	}
}

var workflowKeys = []string{
	"name", "provider", "image", "commands", "depends-on", "variables", "resources",
	"artifacts", "env", "file", "python_script", "args", "requirements", "version",
	"checkpoints", "checkpoint-interval", "keep-checkpoints",
}

var namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

func (p *parser) parseWorkflow(n *yaml.Node) *workflow {
	n = deref(n)
	if n.Kind != yaml.MappingNode {
		p.add(n.Line, "", "workflows", "expected a workflow (a mapping with name:, provider:, commands: ...), found %s", kindName(n))
		return nil
	}
	w := &workflow{line: n.Line}
	kvs := p.pairs(n, "", "")
	// The name first, so that every other message can name the workflow.
	for _, kv := range kvs {
		if kv.key.Value != "name" {
			continue
		}
		if s, ok := p.scalar(kv.val, "", "name", "give the workflow a name"); ok {
			if !namePattern.MatchString(s) {
				p.add(kv.val.Line, "", "name", "%q is not a valid workflow name; use letters, digits, '-', '_' and '.', starting with a letter or digit", s)
			}
			w.name = s
		}
	}
	if w.name == "" {
		p.add(n.Line, "", "name", "missing; every workflow needs a name: (the one given to `dstack run`)")
	}
	wf := w.name
	var fields = map[string]bool{}
	for _, kv := range kvs {
		key, val := kv.key.Value, kv.val
		fields[key] = true
		switch key {
		case "name":
		case "provider":
			if s, ok := p.scalar(val, wf, key, "set it to one of "+strings.Join(Providers, ", ")); ok {
				if !slices.Contains(Providers, s) {
					p.add(deref(val).Line, wf, key, "unknown provider %q; use one of %s", s, strings.Join(Providers, ", "))
				}
				w.provider = s
			}
		case "image":
			w.image = p.str(val, wf, key, "give a Docker image such as python:3.12")
		case "commands":
			w.commands = p.texts(val, wf, key, "list the shell commands to run")
		case "file", "python_script":
			if fields["file"] && fields["python_script"] {
				p.add(kv.key.Line, wf, key, "file and python_script are the same setting; keep one")
			}
			w.file = p.str(val, wf, key, "give the path of the Python script to run")
		case "args":
			w.args = p.parseArgs(val, wf)
		case "requirements":
			w.requirements = p.str(val, wf, key, "give the path of a requirements.txt file")
		case "version":
			w.version = p.str(val, wf, key, `give a Python version such as "3.11"`)
		case "depends-on", "depends_on":
			w.dependsOn = p.parseDependsOn(val, wf, key)
		case "variables":
			w.vars = p.parseVariables(val, wf, key)
		case "resources":
			w.resources = p.parseResources(val, wf)
		case "artifacts":
			w.artifacts = p.parseArtifacts(val, wf)
		case "env":
			w.env = p.parseEnv(val, wf)
		case "checkpoints":
			w.checkpoints.paths = p.parseCheckpointPaths(val, wf)
		case "checkpoint-interval", "checkpoint_interval":
			w.checkpoints.interval = p.parseCheckpointInterval(val, wf, key)
		case "keep-checkpoints", "keep_checkpoints":
			w.checkpoints.keep = p.parseKeepCheckpoints(val, wf, key)
		default:
			p.unknownKey(kv.key, wf, "", workflowKeys)
		}
	}
	p.checkProvider(w, n, fields)
	p.checkCheckpoints(w, n, fields)
	return w
}

// checkProvider checks the fields a workflow's provider needs and those it
// does not use.
func (p *parser) checkProvider(w *workflow, n *yaml.Node, fields map[string]bool) {
	wf := w.name
	pythonOnly := []string{"file", "python_script", "args", "requirements", "version"}
	switch w.provider {
	case "":
		if !fields["provider"] {
			p.add(n.Line, wf, "provider", "missing; set provider: to one of %s", strings.Join(Providers, ", "))
		}
	case "bash":
		if !fields["commands"] {
			p.add(n.Line, wf, "commands", "missing; the bash provider needs a list of commands to run")
		}
		if fields["image"] {
			p.add(w.image.line, wf, "image", "the bash provider does not take an image; use provider: docker to pick one")
		}
		p.notUsed(w, fields, pythonOnly, "use provider: python to run a Python script")
	case "docker":
		if !fields["image"] {
			p.add(n.Line, wf, "image", "missing; the docker provider needs the image to run, such as image: python:3.12")
		}
		if !fields["commands"] {
			p.add(n.Line, wf, "commands", "missing; the docker provider needs a list of commands to run in the image")
		}
		p.notUsed(w, fields, pythonOnly, "use provider: python to run a Python script")
	case "python":
		if fields["image"] {
			p.add(w.image.line, wf, "image", "the python provider runs python:<version>; set version:, or use provider: docker for another image")
		}
		if !fields["file"] && !fields["python_script"] && !fields["commands"] {
			p.add(n.Line, wf, "file", "missing; the python provider needs file: (the script to run) or commands:")
		}
		if fields["args"] && !fields["file"] && !fields["python_script"] {
			p.add(n.Line, wf, "args", "args are passed to file:, which is missing; add file: or put the arguments in commands:")
		}
	}
	if fields["commands"] && len(w.commands) == 0 && w.provider != "" {
		p.add(n.Line, wf, "commands", "the list is empty; list the shell commands to run")
	}
}

func (p *parser) notUsed(w *workflow, fields map[string]bool, keys []string, hint string) {
	for _, k := range keys {
		if fields[k] {
			p.add(w.line, w.name, k, "not used by the %s provider; %s", w.provider, hint)
		}
	}
}

func (p *parser) parseArgs(n *yaml.Node, wf string) []text {
	n = deref(n)
	if n.Kind == yaml.ScalarNode && n.ShortTag() != "!!null" {
		words, err := splitWords(n.Value)
		if err != nil {
			p.add(n.Line, wf, "args", "%v; fix the quoting, or give args as a list", err)
			return nil
		}
		out := make([]text, len(words))
		for i, w := range words {
			out[i] = text{w, n.Line}
		}
		return out
	}
	if n.Kind != yaml.SequenceNode {
		p.add(n.Line, wf, "args", "expected a string or a list of arguments, found %s", kindName(n))
		return nil
	}
	out := make([]text, 0, len(n.Content))
	for _, item := range n.Content {
		s, _ := p.scalar(item, wf, "args", "give each argument as a string")
		out = append(out, text{s, deref(item).Line})
	}
	return out
}

// maxTagLen bounds a tag's name, as the server does.
const maxTagLen = 100

// TagPattern is what a tag's name may be: letters, digits, '-', '_' and '.',
// starting with a letter or digit.
var TagPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// parseDependsOn reads depends-on: workflow names of this run, and
// WORKFLOW:TAG for the workflow of the earlier run tagged TAG. A workflow
// appears once: two entries for it would put two sets of artifacts on the
// same paths.
func (p *parser) parseDependsOn(n *yaml.Node, wf, field string) []dependency {
	var out []dependency
	for _, t := range p.texts(n, wf, field, "list the names of the workflows this one needs") {
		entry := strings.TrimSpace(t.s)
		if entry == "" {
			continue
		}
		name, tag, tagged := strings.Cut(entry, ":")
		name, tag = strings.TrimSpace(name), strings.TrimSpace(tag)
		if tagged {
			switch {
			case name == "" || tag == "" || strings.Contains(tag, ":"):
				p.add(t.line, wf, field, "%q is not WORKFLOW or WORKFLOW:TAG, such as prepare or prepare:latest-data", entry)
				continue
			case !namePattern.MatchString(name):
				p.add(t.line, wf, field, "%q: %q is not a valid workflow name; use letters, digits, '-', '_' and '.', starting with a letter or digit", entry, name)
				continue
			case !TagPattern.MatchString(tag) || len(tag) > maxTagLen:
				p.add(t.line, wf, field, "%q: %q is not a valid tag; use letters, digits, '-', '_' and '.', starting with a letter or digit, at most %d", entry, tag, maxTagLen)
				continue
			}
		}
		d := dependency{name: name, tag: tag, line: t.line}
		if i := slices.IndexFunc(out, func(o dependency) bool { return o.name == name }); i >= 0 {
			if out[i].tag != tag {
				p.add(t.line, wf, field, "%s and %s both give the artifacts of workflow %q; keep one", out[i], d, name)
			}
			continue
		}
		out = append(out, d)
	}
	return out
}

// String is the dependency as written: WORKFLOW or WORKFLOW:TAG.
func (d dependency) String() string {
	if d.tag == "" {
		return d.name
	}
	return d.name + ":" + d.tag
}

var varNamePattern = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_-]*$`)

func (p *parser) parseVariables(n *yaml.Node, wf, field string) []variable {
	n = deref(n)
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		p.add(n.Line, wf, field, "expected a mapping of names to values, such as {epochs: 10}, found %s", kindName(n))
		return nil
	}
	var out []variable
	for _, kv := range p.pairs(n, wf, field) {
		name := kv.key.Value
		if !varNamePattern.MatchString(name) {
			p.add(kv.key.Line, wf, field, "%q is not a valid variable name; use letters, digits, '_' and '-', starting with a letter or '_'", name)
			continue
		}
		v := deref(kv.val)
		if v.Kind != yaml.ScalarNode {
			p.add(v.Line, wf, join(field, name), "expected a single value, found %s", kindName(v))
			continue
		}
		value := v.Value
		if v.ShortTag() == "!!null" {
			value = ""
		}
		out = append(out, variable{name, value, v.Line})
	}
	return out
}

func (p *parser) parseArtifacts(n *yaml.Node, wf string) []text {
	n = deref(n)
	if n.Kind != yaml.SequenceNode {
		return p.texts(n, wf, "artifacts", "list the paths, relative to the working directory, to keep after the job")
	}
	var out []text
	for _, item := range n.Content {
		item = deref(item)
		if item.Kind == yaml.MappingNode {
			// The older spelling: - path: model
			var path *text
			for _, kv := range p.pairs(item, wf, "artifacts") {
				if kv.key.Value != "path" {
					p.unknownKey(kv.key, wf, "artifacts", []string{"path"})
					continue
				}
				t := p.str(kv.val, wf, "artifacts.path", "give a path relative to the working directory")
				path = &t
			}
			if path == nil {
				p.add(item.Line, wf, "artifacts", "missing path:; give a path relative to the working directory")
				continue
			}
			out = append(out, *path)
			continue
		}
		out = append(out, p.str(item, wf, "artifacts", "give a path relative to the working directory"))
	}
	return out
}

var envKeyPattern = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func (p *parser) parseEnv(n *yaml.Node, wf string) []envVar {
	n = deref(n)
	var out []envVar
	add := func(key string, value text) {
		if !envKeyPattern.MatchString(key) {
			p.add(value.line, wf, "env", "%q is not a valid environment variable name; use letters, digits and '_', not starting with a digit", key)
			return
		}
		if slices.ContainsFunc(out, func(e envVar) bool { return e.key == key }) {
			p.add(value.line, wf, "env", "%s is set twice; remove one", key)
			return
		}
		out = append(out, envVar{key, value})
	}
	switch {
	case isNull(n):
	case n.Kind == yaml.MappingNode:
		for _, kv := range p.pairs(n, wf, "env") {
			v := deref(kv.val)
			value := ""
			switch {
			case v.Kind == yaml.ScalarNode && v.ShortTag() != "!!null":
				value = v.Value
			case isNull(v):
			default:
				p.add(v.Line, wf, "env."+kv.key.Value, "expected a single value, found %s", kindName(v))
				continue
			}
			add(kv.key.Value, text{value, v.Line})
		}
	case n.Kind == yaml.SequenceNode:
		for _, item := range n.Content {
			s, ok := p.scalar(item, wf, "env", "give each entry as KEY=VALUE")
			if !ok {
				continue
			}
			key, value, found := strings.Cut(s, "=")
			if !found {
				p.add(deref(item).Line, wf, "env", "%q has no '='; give each entry as KEY=VALUE", s)
				continue
			}
			add(key, text{value, deref(item).Line})
		}
	default:
		p.add(n.Line, wf, "env", "expected a mapping {KEY: value} or a list of KEY=VALUE strings, found %s", kindName(n))
	}
	return out
}
