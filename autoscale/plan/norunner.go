package plan

import (
	"fmt"
	"slices"
	"strconv"
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
// WaitingWithoutBackend uses it when no backend is configured, so that a
// job nothing can ever take says why in `dstack ps` instead of waiting
// silently; with backends, Plan's Waiting says why instead.
func NoRunnerFits(r api.Resources, runners []api.HostResources) string {
	if len(runners) == 0 {
		return "no runner is registered: start one with dstack-runner start"
	}
	what, fix := lack(r, runners)
	if what == "" {
		return ""
	}
	return what + "; " + fix
}

// lack says what none of runners (at least one) has of r, such as "no
// runner has 64 CPUs (the largest has 8)", and how to fix it ("add a runner
// that does, or lower resources"); both are "" when one of them fits.
func lack(r api.Resources, runners []api.HostResources) (what, fix string) {
	n := needOf(r)
	ms := make([]machine, len(runners))
	for i, h := range runners {
		ms[i] = machineOf(h)
		if ms[i].fits(n) {
			return "", ""
		}
	}
	fix = "add a runner that does, or lower resources"
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
		return fmt.Sprintf("no runner has %s (the largest has %d)", plural(nil, n.cpu, "CPU"), maxCPUs), fix
	case n.memoryMiB > maxMem:
		return fmt.Sprintf("no runner has %s memory (the largest has %s)", size(nil, n.memoryMiB), size(nil, maxMem)), fix
	case n.gpuCount > maxGPUs && maxGPUs == 0:
		return "no runner has a GPU", fix
	case n.gpuCount > maxGPUs:
		return fmt.Sprintf("no runner has %s (the most one has is %d)", plural(nil, n.gpuCount, "GPU"), maxGPUs), fix
	case n.gpuCount > maxNamed && maxNamed == 0:
		return fmt.Sprintf("no runner has a GPU matching %q (runners have %s)", name, strings.Join(gpuNames(runners), ", ")),
			"add a runner that does, or change resources.gpu.name"
	case n.gpuCount > maxNamed:
		return fmt.Sprintf("no runner has %d GPUs matching %q (the most one has is %d)", n.gpuCount, name, maxNamed), fix
	case n.gpuCount > maxFull:
		matching := ""
		if name != "" {
			matching = fmt.Sprintf(" matching %q", name)
		}
		if n.gpuCount == 1 || maxFull == 0 {
			return fmt.Sprintf("no runner has a GPU%s with %s memory (the largest has %s)",
				matching, size(nil, n.gpuMemMiB), size(nil, maxGPUMB)), fix
		}
		return fmt.Sprintf("no runner has %d GPUs%s with %s memory each (the most one has is %d)",
			n.gpuCount, matching, size(nil, n.gpuMemMiB), maxFull), fix
	}
	return fmt.Sprintf("no runner has all of %s", describe(r)), fix
}

// RegisteredRunner is a self-hosted runner a user registered, whatever it
// does now: pending reasons compare a job with every one of them, to tell
// a job that waits for a busy runner from one that no runner could take.
type RegisteredRunner struct {
	UserID string
	// Shared: it takes any user's jobs (a shared self-hosted runner, or
	// with no backend the runner of an on-demand instance).
	Shared bool
	// Resources are the runner's whole machine, busy or not.
	Resources api.HostResources
	// Busy: it runs a job now.
	Busy bool
	// Offline: it stopped heartbeating (it may come back), or its machine
	// is being reclaimed.
	Offline bool
	// Count is how many runners alike this one stands for (a tally of
	// the store's); 0 is one.
	Count int
}

func (r RegisteredRunner) count() int { return max(r.Count, 1) }

// runnerFit is how the runners a user registered stand toward one job.
type runnerFit struct {
	registered          int
	free, busy, offline int    // of the runners that fit
	lack, fix           string // when none fits: what they lack, how to fix it
}

func fitRegistered(r api.Resources, runners []RegisteredRunner) runnerFit {
	var f runnerFit
	if len(runners) == 0 {
		return f
	}
	n := needOf(r)
	hosts := make([]api.HostResources, len(runners))
	for i, rn := range runners {
		hosts[i] = rn.Resources
		f.registered += rn.count()
		if !machineOf(rn.Resources).fits(n) {
			continue
		}
		switch {
		case rn.Offline:
			f.offline += rn.count()
		case rn.Busy:
			f.busy += rn.count()
		default:
			f.free += rn.count()
		}
	}
	if f.free+f.busy+f.offline == 0 {
		f.lack, f.fix = lack(r, hosts)
	}
	return f
}

// waitingFor is "waiting: 2 runners that fit are busy" (or offline, or
// both) when some runner fits and none of them is free, else "".
func (f runnerFit) waitingFor() string {
	if f.free > 0 || f.busy+f.offline == 0 {
		return ""
	}
	var b []byte
	b = append(b, "waiting: "...)
	first, state := f.busy, "busy"
	if first == 0 {
		first, state = f.offline, "offline"
	}
	b = plural(b, first, "runner")
	if first == 1 {
		b = append(b, " that fits is "...)
	} else {
		b = append(b, " that fit are "...)
	}
	b = append(b, state...)
	if f.busy > 0 && f.offline > 0 {
		b = strconv.AppendInt(append(b, " and "...), int64(f.offline), 10)
		if f.offline == 1 {
			b = append(b, " is offline"...)
		} else {
			b = append(b, " are offline"...)
		}
	}
	return string(b)
}

// waitingOnRunners says why a job needing r waits, from the runners that
// may take it, on a server with no backend: "" when one that fits is free
// (it takes the job on its next claim), "waiting: 2 runners that fit are
// busy" when every one that fits is busy or offline, and what they lack
// when none fits (as NoRunnerFits).
func waitingOnRunners(r api.Resources, runners []RegisteredRunner) (msg string, busy bool) {
	f := fitRegistered(r, runners)
	switch {
	case f.registered == 0:
		return "no runner is registered: start one with dstack-runner start", false
	case f.lack != "":
		return f.lack + "; " + f.fix, false
	}
	msg = f.waitingFor()
	return msg, msg != "" && f.busy > 0
}

// WaitingWithoutBackend is the Waiting of a server with no backend, where
// nothing can be launched and so nothing planned: each pending job of
// s.Jobs that no free runner of s.Registered fits waits, because the
// runners that fit are busy or offline, or because none could ever take
// it; a job of a user at their cap of running jobs (s.Users) waits for
// that. s.Registered are then the runners that may take a job some day:
// every self-hosted runner, online or not, and the runner of an on-demand
// instance while it is online (Shared, as it takes anyone's jobs). Jobs of
// one user asking for the same are fitted once. The result is sorted by
// JobID.
func WaitingWithoutBackend(s Snapshot) []Waiting {
	byUser := map[string][]RegisteredRunner{}
	var shared []RegisteredRunner
	for _, r := range s.Registered {
		if r.Shared {
			shared = append(shared, r)
		} else {
			byUser[r.UserID] = append(byUser[r.UserID], r)
		}
	}
	capped := map[string]int{}
	for _, u := range s.Users {
		if u.MaxRunning > 0 && u.Running >= u.MaxRunning {
			capped[u.ID] = u.MaxRunning
		}
	}
	type shape struct {
		user string
		res  api.Resources // GPU nil
		gpu  api.GPURequest
	}
	type why struct {
		msg  string
		busy bool
	}
	memo := map[shape]why{}
	var out []Waiting
	for _, j := range s.Jobs {
		if n, ok := capped[j.UserID]; ok {
			out = append(out, userLimitWaiting(j.ID, n))
			continue
		}
		sh := shape{user: j.UserID, res: j.Resources}
		if g := j.Resources.GPU; g != nil {
			sh.res.GPU, sh.gpu = nil, *g
		}
		w, ok := memo[sh]
		if !ok {
			w.msg, w.busy = waitingOnRunners(j.Resources, append(slices.Clip(byUser[j.UserID]), shared...))
			memo[sh] = w
		}
		if w.msg != "" {
			out = append(out, Waiting{JobID: j.ID, Code: WaitNoRunner, Message: w.msg, Busy: w.busy})
		}
	}
	slices.SortFunc(out, func(a, b Waiting) int { return strings.Compare(a.JobID, b.JobID) })
	return out
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

// userLimitWaiting is the Waiting of a job whose user runs as many jobs as
// their cap allows.
func userLimitWaiting(jobID string, maxRunning int) Waiting {
	return Waiting{JobID: jobID, Code: WaitUserLimit, Message: fmt.Sprintf("waiting: user limit of %d running jobs", maxRunning)}
}
