package plan

import (
	"fmt"
	"slices"
	"strings"

	"github.com/dstackai/dstack/api"
)

// NoRunnerFits says why none of runners, the whole resources of every
// runner a user registered (busy or not, online or not), could ever run a
// job needing r; it is "" when one could. It fits exactly as Plan does (a
// GPU name matches as a substring, case-insensitively), and names the first
// of CPUs, memory, GPU count, GPU name and GPU memory that no runner has,
// with what the best runner has instead:
//
//	no runner has 64 CPUs (the largest has 8); add a runner that does, or lower resources
//
// When each of them is met by some runner but no runner meets them all, it
// says so. With no runner at all, it says how to start one.
//
// The server uses it when no backend is configured, so that a job nothing
// can ever take says why in `dstack ps` instead of waiting silently; with
// backends, Plan's Waiting says why instead.
func NoRunnerFits(r api.Resources, runners []api.HostResources) string {
	if len(runners) == 0 {
		return "no runner is registered: start one with dstack-runner start"
	}
	n := needOf(r)
	ms := make([]machine, len(runners))
	for i, h := range runners {
		ms[i] = machineOf(h)
		if ms[i].fits(n) {
			return ""
		}
	}
	const fix = "; add a runner that does, or lower resources"
	var (
		maxCPUs  int
		maxMem   int64
		maxGPUs  int
		maxNamed int   // GPUs matching n.gpuName on one runner
		maxFull  int   // GPUs matching n.gpuName with n.gpuMemMiB on one runner
		maxGPUMB int64 // the largest memory of a GPU matching n.gpuName
	)
	for _, m := range ms {
		maxCPUs, maxMem, maxGPUs = max(maxCPUs, m.cpus), max(maxMem, m.memoryMiB), max(maxGPUs, len(m.gpus))
		named, full := 0, 0
		for _, g := range m.gpus {
			if !strings.Contains(g.name, n.gpuName) {
				continue
			}
			named++
			maxGPUMB = max(maxGPUMB, g.memoryMiB)
			if g.memoryMiB >= n.gpuMemMiB {
				full++
			}
		}
		maxNamed, maxFull = max(maxNamed, named), max(maxFull, full)
	}
	name := strings.TrimSpace(gpuName(r))
	switch {
	case n.cpu > maxCPUs:
		return fmt.Sprintf("no runner has %s (the largest has %d)%s", plural(nil, n.cpu, "CPU"), maxCPUs, fix)
	case n.memoryMiB > maxMem:
		return fmt.Sprintf("no runner has %s memory (the largest has %s)%s", size(nil, n.memoryMiB), size(nil, maxMem), fix)
	case n.gpuCount > maxGPUs && maxGPUs == 0:
		return "no runner has a GPU" + fix
	case n.gpuCount > maxGPUs:
		return fmt.Sprintf("no runner has %s (the most one has is %d)%s", plural(nil, n.gpuCount, "GPU"), maxGPUs, fix)
	case n.gpuCount > maxNamed && maxNamed == 0:
		return fmt.Sprintf("no runner has a GPU matching %q (runners have %s); add a runner that does, or change resources.gpu.name",
			name, strings.Join(gpuNames(runners), ", "))
	case n.gpuCount > maxNamed:
		return fmt.Sprintf("no runner has %d GPUs matching %q (the most one has is %d)%s", n.gpuCount, name, maxNamed, fix)
	case n.gpuCount > maxFull:
		matching := ""
		if name != "" {
			matching = fmt.Sprintf(" matching %q", name)
		}
		if n.gpuCount == 1 || maxFull == 0 {
			return fmt.Sprintf("no runner has a GPU%s with %s memory (the largest has %s)%s",
				matching, size(nil, n.gpuMemMiB), size(nil, maxGPUMB), fix)
		}
		return fmt.Sprintf("no runner has %d GPUs%s with %s memory each (the most one has is %d)%s",
			n.gpuCount, matching, size(nil, n.gpuMemMiB), maxFull, fix)
	}
	return fmt.Sprintf("no runner has all of %s%s", describe(r), fix)
}

func gpuName(r api.Resources) string {
	if r.GPU == nil {
		return ""
	}
	return r.GPU.Name
}

// gpuNames lists the distinct GPU names of runners, sorted.
func gpuNames(runners []api.HostResources) []string {
	var out []string
	for _, h := range runners {
		for _, g := range h.GPUs {
			out = append(out, g.Name)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}
