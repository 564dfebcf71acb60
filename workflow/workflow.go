// Package workflow reads a project's .dstack/workflows.yaml and turns one of
// its workflows, with everything it depends on, into the job specs of a run.
//
// The file is parsed with yaml.v3's Node API so that every problem is
// reported with the file, the line and the field, and with what to do about
// it. Parse checks everything it can without knowing the variable overrides
// of a run: keys, providers, resources, dependencies (unknown names, cycles)
// and variable references. A file that Parse accepts resolves every one of
// its workflows; Resolve can then only fail on the workflow name or on the
// overrides.
//
// # Format
//
//	variables:               # optional, visible to every workflow
//	  seed: 1
//	workflows:
//	  - name: train
//	    provider: docker     # bash | docker | python
//	    image: python:3.12
//	    commands: [python train.py --epochs ${{ epochs }}]
//	    depends-on: [prepare]   # or prepare:TAG, a tagged earlier run
//	    variables: {epochs: 10}
//	    resources: {cpu: 4, memory: 16GB, gpu: 1, interruptible: true, shm_size: 1GB}
//	    artifacts: [model]
//	    env: {KEY: value}    # or a list of KEY=VALUE strings
//	    checkpoints: [ckpt]  # synced while running, restored into the next attempt
//	    checkpoint-interval: 5m
//	    keep-checkpoints: false
//
// A depends-on entry is the name of a workflow of the file, run first in
// the same run, or WORKFLOW:TAG: the workflow's job of the user's earlier
// run tagged TAG (`dstack tag RUN TAG`), which is not run again; its
// artifacts are placed in the working directory all the same. The file
// need not define WORKFLOW then, and a workflow may depend on a tagged run
// of itself. Whether the tag exists is the server's to say when the run is
// submitted. A workflow is listed once, tagged or not.
//
// Top-level keys starting with "x-" are ignored, as in Docker Compose: a
// place for YAML anchors that workflows merge in (<<: *defaults).
//
// Variables are referenced as ${{ name }} (also ${{ variables.name }}) in
// commands, image, env values, args, artifacts, file, requirements and
// version; $${{ writes a literal ${{. A workflow's own variables override the
// top-level ones, and the overrides given to Resolve (dstack run train
// --epochs 20) override both. Substitution is a single pass: a value is never
// scanned for further references.
//
// Memory sizes (memory, shm_size, gpu memory) are a number with an optional
// unit: B, K/KB/KiB, M/MB/MiB, G/GB/GiB, T/TB/TiB, case-insensitive,
// fractions allowed ("1.5GB"). As in dstack, the decimal units are read as
// their binary ones (1GB is 1024 MiB), and a bare number is MiB. Sizes are
// rounded up to a whole MiB.
//
// The python provider runs python:<version> (default 3.11): pip install -r
// <requirements> when requirements is set, then the workflow's commands if
// any, then python3 <file> <args>, the file and each argument shell-quoted.
// When args is a single string it is split into words the way a POSIX shell
// would (quotes and backslashes), before variables are substituted, so a
// variable's value is always one argument.
package workflow

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Providers are the valid values of a workflow's provider.
var Providers = []string{"bash", "docker", "python"}

// DefaultPythonVersion is the python provider's version when none is given.
const DefaultPythonVersion = "3.11"

// ErrNotFound is returned by Load when the project has no workflows file.
var ErrNotFound = errors.New("no workflows file")

// Error is one problem in a workflows file. Parse returns every problem it
// finds joined with errors.Join; use errors.As to get at the first one.
type Error struct {
	File     string
	Line     int    // 1-based; 0 when the problem has no single line
	Workflow string // empty for problems outside a workflow
	Field    string // the key concerned, such as "resources.memory"; may be empty
	Msg      string // what is wrong and how to fix it
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	b.WriteString(": ")
	if e.Workflow != "" {
		fmt.Fprintf(&b, "workflow %q: ", e.Workflow)
	}
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// File is a parsed workflows file.
type File struct {
	// Path is the file name given to Parse, used in messages.
	Path      string
	vars      []variable // top-level, in file order
	workflows []*workflow
	byName    map[string]*workflow
}

// Names lists the workflows in file order.
func (f *File) Names() []string {
	names := make([]string, len(f.workflows))
	for i, w := range f.workflows {
		names[i] = w.name
	}
	return names
}

// Path is where a project in dir keeps its workflows file; `dstack init`
// writes Sample there.
func Path(dir string) string {
	return filepath.Join(dir, ".dstack", "workflows.yaml")
}

// Load reads and parses dir/.dstack/workflows.yaml, or workflows.yml when
// only that one exists. A missing file is ErrNotFound, with a message that
// says to run `dstack init`.
func Load(dir string) (*File, error) {
	for _, name := range []string{"workflows.yaml", "workflows.yml"} {
		p := filepath.Join(dir, ".dstack", name)
		data, err := os.ReadFile(p)
		if err == nil {
			return Parse(p, data)
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("read workflows: %w", err)
		}
	}
	return nil, fmt.Errorf("%w: %s does not exist; run `dstack init` to write a sample one, or run dstack from the project's directory",
		ErrNotFound, Path(dir))
}
