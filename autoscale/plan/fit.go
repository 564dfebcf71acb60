package plan

import (
	"strconv"
	"strings"

	"github.com/dstackai/dstack/api"
)

// need is what a job asks of a machine, normalised: a GPU name lowercased and
// trimmed, GPU fields zero when no GPU is asked for. Together with the user
// and the purchase types the job accepts it is the job's shape; jobs of one
// shape have the same candidates, which are computed once per shape.
type need struct {
	cpu       int
	memoryMiB int64
	gpuCount  int
	gpuName   string
	gpuMemMiB int64
}

func needOf(r api.Resources) need {
	n := need{cpu: r.CPU, memoryMiB: r.MemoryMiB}
	if r.GPU != nil && r.GPU.Count > 0 {
		n.gpuCount = r.GPU.Count
		n.gpuName = strings.ToLower(strings.TrimSpace(r.GPU.Name))
		n.gpuMemMiB = r.GPU.MemoryMiB
	}
	return n
}

// machine is what an offer, an instance or a free runner has, with GPU names
// lowercased once.
type machine struct {
	cpus      int
	memoryMiB int64
	gpus      []gpu
}

type gpu struct {
	name      string // lowercased
	memoryMiB int64
}

func machineOf(h api.HostResources) machine {
	m := machine{cpus: h.CPUs, memoryMiB: h.MemoryMiB}
	if len(h.GPUs) > 0 {
		m.gpus = make([]gpu, len(h.GPUs))
		for i, g := range h.GPUs {
			m.gpus[i] = gpu{name: strings.ToLower(g.Name), memoryMiB: g.MemoryMiB}
		}
	}
	return m
}

// fits reports whether m can run a job needing n: enough CPUs and memory,
// and at least n.gpuCount GPUs each of which has n.gpuName as a substring of
// its name (case-insensitively) and at least n.gpuMemMiB of memory. A job
// asking for nothing fits any machine.
func (m machine) fits(n need) bool {
	if n.cpu > m.cpus || n.memoryMiB > m.memoryMiB || n.gpuCount > len(m.gpus) {
		return false
	}
	if n.gpuCount == 0 {
		return true
	}
	ok := 0
	for _, g := range m.gpus {
		if g.memoryMiB >= n.gpuMemMiB && strings.Contains(g.name, n.gpuName) {
			ok++
			if ok == n.gpuCount {
				return true
			}
		}
	}
	return false
}

// less orders machines smallest first, so that a job takes the smallest free
// machine that fits and leaves the big ones to the jobs that need them.
func (m machine) less(o machine) bool {
	if len(m.gpus) != len(o.gpus) {
		return len(m.gpus) < len(o.gpus)
	}
	if m.cpus != o.cpus {
		return m.cpus < o.cpus
	}
	return m.memoryMiB < o.memoryMiB
}

// describe renders what r asks for, as a user wrote it: "4 CPUs, 16GB
// memory, 2 GPUs named A100 with 40GB each". It is "" when r asks for nothing.
func describe(r api.Resources) string {
	b := make([]byte, 0, 64)
	sep := func() {
		if len(b) > 0 {
			b = append(b, ", "...)
		}
	}
	if r.CPU > 0 {
		b = plural(b, r.CPU, "CPU")
	}
	if r.MemoryMiB > 0 {
		sep()
		b = append(size(b, r.MemoryMiB), " memory"...)
	}
	if g := r.GPU; g != nil && g.Count > 0 {
		sep()
		b = plural(b, g.Count, "GPU")
		if name := strings.TrimSpace(g.Name); name != "" {
			b = append(append(b, " named "...), name...)
		}
		if g.MemoryMiB > 0 {
			b = append(size(append(b, " with "...), g.MemoryMiB), " each"...)
		}
	}
	return string(b)
}

// instanceFor renders the instance a job asks for: "an on-demand instance
// with 4 GPUs", "an instance".
func instanceFor(r api.Resources) string {
	s := "an instance"
	if !r.Interruptible {
		s = "an on-demand instance"
	}
	if d := describe(r); d != "" {
		s += " with " + d
	}
	return s
}

// plural appends "1 CPU" or "4 CPUs" to b.
func plural(b []byte, n int, what string) []byte {
	b = append(strconv.AppendInt(b, int64(n), 10), ' ')
	b = append(b, what...)
	if n != 1 {
		b = append(b, 's')
	}
	return b
}

// size appends MiB the way workflows write sizes (1GB is 1024 MiB) to b.
func size(b []byte, mib int64) []byte {
	if mib%1024 == 0 {
		return append(strconv.AppendInt(b, mib/1024, 10), "GB"...)
	}
	return append(strconv.AppendInt(b, mib, 10), "MB"...)
}
