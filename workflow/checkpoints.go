package workflow

import (
	"fmt"
	"path"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/dstackai/dstack/api"
)

// Checkpoint settings of a workflow:
//
//	checkpoints: [ckpt]          # paths relative to the working directory
//	checkpoint-interval: 5m      # how often they are synced; default 5m
//	keep-checkpoints: true       # keep them after the job is done
//
// The paths are not substituted: they name where the job writes, which the
// workflows file fixes, and Parse checks them whole.

// DefaultCheckpointInterval is how often checkpoints are synced when the
// workflow does not say.
const DefaultCheckpointInterval = 5 * time.Minute

// Bounds of checkpoint-interval.
const (
	MinCheckpointInterval = time.Second
	MaxCheckpointInterval = 24 * time.Hour
)

// maxCheckpointPaths bounds the checkpoints list.
const maxCheckpointPaths = 100

type checkpoints struct {
	paths    []string
	interval time.Duration
	keep     bool
}

// CheckCheckpointPath says what is wrong with a checkpoint path, as written
// in a workflow, or returns it cleaned: relative to the working directory,
// inside it, and not the directory itself.
func CheckCheckpointPath(p string) (string, error) {
	p = strings.TrimSpace(p)
	if p == "" {
		return "", fmt.Errorf("a path is empty; give a path relative to the working directory, such as ckpt")
	}
	clean := path.Clean(p)
	switch {
	case path.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, "../"):
		return "", fmt.Errorf("%q is outside the working directory; give a path relative to it, such as ckpt", p)
	case clean == ".":
		return "", fmt.Errorf("%q is the whole working directory; name the directory or files the job saves its state in, such as ckpt", p)
	}
	if err := api.CheckArtifactPath(clean); err != nil {
		return "", fmt.Errorf("%q: %v", p, strings.TrimPrefix(err.Error(), "artifact path "))
	}
	return clean, nil
}

func (p *parser) parseCheckpointPaths(n *yaml.Node, wf string) []string {
	var out []string
	for _, t := range p.texts(n, wf, "checkpoints", "list the paths, relative to the working directory, that the job saves its state in") {
		if strings.TrimSpace(t.s) == "" {
			continue // reported by texts
		}
		clean, err := CheckCheckpointPath(t.s)
		if err != nil {
			p.add(t.line, wf, "checkpoints", "%v", err)
			continue
		}
		if !slices.Contains(out, clean) {
			out = append(out, clean)
		}
	}
	if len(out) > maxCheckpointPaths {
		p.add(deref(n).Line, wf, "checkpoints", "%d paths, more than %d; list the directories that hold them instead", len(out), maxCheckpointPaths)
	}
	return out
}

func (p *parser) parseCheckpointInterval(n *yaml.Node, wf, field string) time.Duration {
	s, ok := p.scalar(n, wf, field, "give a duration such as 5m or 30s")
	if !ok {
		return 0
	}
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		p.add(deref(n).Line, wf, field, "%q is not a duration; give one such as 5m, 90s or 1h", s)
		return 0
	}
	if d < MinCheckpointInterval || d > MaxCheckpointInterval {
		p.add(deref(n).Line, wf, field, "%s is out of range; give a duration from %s to %s", d, MinCheckpointInterval, MaxCheckpointInterval)
		return 0
	}
	return d
}

func (p *parser) parseKeepCheckpoints(n *yaml.Node, wf, field string) bool {
	v := deref(n)
	var b bool
	if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!bool" || v.Decode(&b) != nil {
		p.add(v.Line, wf, field, "expected true or false, found %s", kindName(v))
	}
	return b
}

// checkCheckpoints fills the defaults and refuses settings without paths.
func (p *parser) checkCheckpoints(w *workflow, n *yaml.Node, fields map[string]bool) {
	if w.checkpoints.interval == 0 {
		w.checkpoints.interval = DefaultCheckpointInterval
	}
	if fields["checkpoints"] {
		return
	}
	for _, k := range []string{"checkpoint-interval", "checkpoint_interval", "keep-checkpoints", "keep_checkpoints"} {
		if fields[k] {
			p.add(n.Line, w.name, k, "has no effect without checkpoints:; list the paths the job saves its state in, such as checkpoints: [ckpt]")
		}
	}
}
