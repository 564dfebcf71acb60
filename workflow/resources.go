package workflow

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/dstackai/dstack/api"
)

var resourceKeys = []string{"cpu", "memory", "gpu", "interruptible", "shm_size"}

// maxMemoryMiB is 1 PiB, far above any machine, low enough to never overflow.
const maxMemoryMiB = 1 << 30

func (p *parser) parseResources(n *yaml.Node, wf string) api.Resources {
	var r api.Resources
	n = deref(n)
	if isNull(n) {
		return r
	}
	if n.Kind != yaml.MappingNode {
		p.add(n.Line, wf, "resources", "expected a mapping such as {cpu: 4, memory: 16GB, gpu: 1}, found %s", kindName(n))
		return r
	}
	for _, kv := range p.pairs(n, wf, "resources") {
		field := "resources." + kv.key.Value
		v := deref(kv.val)
		switch kv.key.Value {
		case "cpu":
			if c, ok := p.count(v, wf, field, "give the number of CPUs, such as cpu: 4"); ok {
				if c == 0 {
					p.add(v.Line, wf, field, "must be at least 1; remove it to take any number of CPUs")
				}
				r.CPU = c
			}
		case "memory":
			r.MemoryMiB = p.memory(v, wf, field)
		case "shm_size", "shm-size":
			r.ShmSizeMiB = p.memory(v, wf, field)
		case "interruptible":
			var b bool
			if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!bool" || v.Decode(&b) != nil {
				p.add(v.Line, wf, field, "expected true or false, found %s", kindName(v))
			}
			r.Interruptible = b
		case "gpu":
			r.GPU = p.gpu(v, wf, field)
		default:
			p.unknownKey(kv.key, wf, "resources", resourceKeys)
		}
	}
	return r
}

// count reads a whole number >= 0.
func (p *parser) count(v *yaml.Node, wf, field, hint string) (int, bool) {
	if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!int" {
		p.add(v.Line, wf, field, "expected a whole number, found %s; %s", kindName(v), hint)
		return 0, false
	}
	var c int64
	if err := v.Decode(&c); err != nil || c > math.MaxInt32 {
		p.add(v.Line, wf, field, "%q is out of range; %s", v.Value, hint)
		return 0, false
	}
	if c < 0 {
		p.add(v.Line, wf, field, "must not be negative, found %d; %s", c, hint)
		return 0, false
	}
	return int(c), true
}

func (p *parser) memory(v *yaml.Node, wf, field string) int64 {
	if v.Kind != yaml.ScalarNode || v.ShortTag() == "!!null" {
		p.add(v.Line, wf, field, "expected a size such as 16GB or 512MB, found %s", kindName(v))
		return 0
	}
	mib, err := ParseMemory(v.Value)
	if err != nil {
		p.add(v.Line, wf, field, "%v", err)
		return 0
	}
	return mib
}

var gpuKeys = []string{"count", "name", "memory"}

func (p *parser) gpu(v *yaml.Node, wf, field string) *api.GPURequest {
	switch v.Kind {
	case yaml.ScalarNode:
		c, ok := p.count(v, wf, field, "give the number of GPUs, or a mapping such as {count: 1, name: A100, memory: 40GB}")
		if !ok || c == 0 {
			return nil
		}
		return &api.GPURequest{Count: c}
	case yaml.MappingNode:
		g := &api.GPURequest{Count: 1}
		for _, kv := range p.pairs(v, wf, field) {
			f := field + "." + kv.key.Value
			val := deref(kv.val)
			switch kv.key.Value {
			case "count":
				if c, ok := p.count(val, wf, f, "give the number of GPUs"); ok {
					if c == 0 {
						p.add(val.Line, wf, f, "must be at least 1; remove gpu: to run without a GPU")
					}
					g.Count = c
				}
			case "name":
				if s, ok := p.scalar(val, wf, f, "give a GPU model such as A100"); ok {
					g.Name = strings.TrimSpace(s)
				}
			case "memory":
				g.MemoryMiB = p.memory(val, wf, f)
			default:
				p.unknownKey(kv.key, wf, field, gpuKeys)
			}
		}
		return g
	}
	p.add(v.Line, wf, field, "expected a number of GPUs or a mapping such as {count: 1, name: A100, memory: 40GB}, found %s", kindName(v))
	return nil
}

var memoryPattern = regexp.MustCompile(`^([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([A-Za-z]*)$`)

var memoryUnits = map[string]float64{
	"b": 1.0 / (1 << 20),
	"k": 1.0 / (1 << 10), "kb": 1.0 / (1 << 10), "kib": 1.0 / (1 << 10),
	"": 1, "m": 1, "mb": 1, "mib": 1,
	"g": 1 << 10, "gb": 1 << 10, "gib": 1 << 10,
	"t": 1 << 20, "tb": 1 << 20, "tib": 1 << 20,
}

// ParseMemory reads a size such as "16GB", "512MiB", "1.5GB" or "1024" and
// returns it in MiB, rounded up. Decimal units are read as binary ones (1GB
// is 1024 MiB) and a bare number is MiB.
func ParseMemory(s string) (int64, error) {
	t := strings.TrimSpace(s)
	if strings.HasPrefix(t, "-") {
		return 0, fmt.Errorf("%q must be more than zero", s)
	}
	m := memoryPattern.FindStringSubmatch(t)
	if m == nil {
		return 0, fmt.Errorf("%q is not a size; write a number and a unit, such as 16GB or 512MB", s)
	}
	unit, ok := memoryUnits[strings.ToLower(m[2])]
	if !ok {
		return 0, fmt.Errorf("%q has an unknown unit %q; use MB, GB or TB", s, m[2])
	}
	n, err := strconv.ParseFloat(m[1], 64)
	if errors.Is(err, strconv.ErrRange) {
		return 0, fmt.Errorf("%q is larger than any machine; check the unit", s)
	}
	if err != nil {
		return 0, fmt.Errorf("%q is not a size; write a number and a unit, such as 16GB", s)
	}
	mib := math.Ceil(n * unit)
	switch {
	case mib <= 0:
		return 0, fmt.Errorf("%q must be more than zero", s)
	case mib > maxMemoryMiB || math.IsInf(mib, 0) || math.IsNaN(mib):
		return 0, fmt.Errorf("%q is larger than any machine; check the unit", s)
	}
	return int64(mib), nil
}
