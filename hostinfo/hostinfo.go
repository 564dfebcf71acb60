// Package hostinfo detects what a runner's machine offers: CPUs, memory, disk
// and GPUs.
//
// Limits of the container or cgroup the runner lives in win over the host's
// totals, so a runner inside a 2-CPU container reports 2 CPUs. GPUs come from
// nvidia-smi's CSV output, parsed strictly by ParseNvidiaSMI: no nvidia-smi
// means no GPU, and a broken driver means no GPU and a warning.
package hostinfo

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/dstackai/dstack/api"
)

// Options say where to look. The zero value inspects the running system.
type Options struct {
	// DataDir is the directory whose file system's size is reported as disk.
	// Empty means the current directory.
	DataDir string
	// Root is prepended to /proc and /sys paths (tests point it at a fake tree).
	Root string
	// NvidiaSMI is the nvidia-smi binary, looked up in PATH; "" means "nvidia-smi".
	NvidiaSMI string
	// Logger receives warnings (a broken GPU driver, an unreadable cgroup file).
	Logger *slog.Logger
}

// Detect returns the machine's resources. It fails only when the disk of
// DataDir cannot be measured; anything else it cannot read is reported as
// the host's total or as absent, with a warning.
func Detect(ctx context.Context, o Options) (api.HostResources, error) {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("subsystem", "hostinfo")

	res := api.HostResources{CPUs: CPUs(o.Root)}

	mem, err := MemoryMiB(o.Root)
	if err != nil {
		log.Warn("cannot read the memory size; reporting 0", "err", err)
	}
	res.MemoryMiB = mem

	dir := o.DataDir
	if dir == "" {
		dir = "."
	}
	disk, err := DiskMiB(dir)
	if err != nil {
		return api.HostResources{}, err
	}
	res.DiskMiB = disk

	bin := o.NvidiaSMI
	if bin == "" {
		bin = "nvidia-smi"
	}
	gpus, err := queryGPUs(ctx, bin)
	if err != nil {
		log.Warn("GPUs are not usable; reporting none (check the NVIDIA driver with `nvidia-smi`)", "err", err)
	}
	res.GPUs = gpus
	return res, nil
}

// CPUs is the number of CPUs the process may use: runtime.NumCPU (which
// honours the affinity mask) lowered to the cgroup's CPU quota, rounded up.
func CPUs(root string) int {
	n := runtime.NumCPU()
	if q, ok := cgroupCPUQuota(root); ok {
		if c := int(math.Ceil(q)); c >= 1 && c < n {
			n = c
		}
	}
	return n
}

// cgroupCPUQuota reads the CPU quota of cgroup v2 (cpu.max) or v1
// (cpu.cfs_quota_us / cpu.cfs_period_us) in CPUs; ok is false when unlimited
// or unknown.
func cgroupCPUQuota(root string) (float64, bool) {
	if b, err := os.ReadFile(filepath.Join(root, "/sys/fs/cgroup/cpu.max")); err == nil {
		return ParseCPUMax(string(b))
	}
	q, err1 := readInt(filepath.Join(root, "/sys/fs/cgroup/cpu/cpu.cfs_quota_us"))
	p, err2 := readInt(filepath.Join(root, "/sys/fs/cgroup/cpu/cpu.cfs_period_us"))
	if err1 != nil || err2 != nil || q <= 0 || p <= 0 {
		return 0, false
	}
	return float64(q) / float64(p), true
}

// ParseCPUMax parses cgroup v2's cpu.max ("max 100000" or "150000 100000")
// into CPUs; ok is false when unlimited or malformed.
func ParseCPUMax(s string) (float64, bool) {
	f := strings.Fields(s)
	if len(f) == 0 || f[0] == "max" {
		return 0, false
	}
	q, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil || q <= 0 {
		return 0, false
	}
	period := int64(100000)
	if len(f) > 1 {
		p, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil || p <= 0 {
			return 0, false
		}
		period = p
	}
	return float64(q) / float64(period), true
}

// MemoryMiB is MemTotal of /proc/meminfo, lowered to the cgroup's memory
// limit when there is one.
func MemoryMiB(root string) (int64, error) {
	b, err := os.ReadFile(filepath.Join(root, "/proc/meminfo"))
	if err != nil {
		return 0, fmt.Errorf("read meminfo: %w", err)
	}
	total, err := ParseMeminfoTotal(string(b))
	if err != nil {
		return 0, err
	}
	if limit, ok := cgroupMemoryLimit(root); ok && limit < total {
		total = limit
	}
	return total >> 20, nil
}

// ParseMeminfoTotal returns MemTotal of /proc/meminfo in bytes.
func ParseMeminfoTotal(s string) (int64, error) {
	for _, line := range strings.Split(s, "\n") {
		rest, ok := strings.CutPrefix(line, "MemTotal:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			break
		}
		v, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || v < 0 {
			return 0, fmt.Errorf("meminfo: MemTotal %q is not a number", f[0])
		}
		unit := int64(1)
		if len(f) > 1 && strings.EqualFold(f[1], "kB") {
			unit = 1024
		}
		return v * unit, nil
	}
	return 0, fmt.Errorf("meminfo: no MemTotal line")
}

// cgroupMemoryLimit reads memory.max (v2) or memory.limit_in_bytes (v1) in
// bytes; ok is false when unlimited or unknown.
func cgroupMemoryLimit(root string) (int64, bool) {
	if b, err := os.ReadFile(filepath.Join(root, "/sys/fs/cgroup/memory.max")); err == nil {
		s := strings.TrimSpace(string(b))
		if s == "max" {
			return 0, false
		}
		v, err := strconv.ParseInt(s, 10, 64)
		return v, err == nil && v > 0
	}
	v, err := readInt(filepath.Join(root, "/sys/fs/cgroup/memory/memory.limit_in_bytes"))
	// v1 says "no limit" with a huge page-rounded number near MaxInt64.
	if err != nil || v <= 0 || v >= math.MaxInt64/2 {
		return 0, false
	}
	return v, true
}

// DiskMiB is the size of the file system holding dir.
func DiskMiB(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("measure disk of %s: %w", dir, err)
	}
	return int64(st.Blocks) * int64(st.Bsize) >> 20, nil //nolint:gosec,unconvert // a disk under 8 EiB; Bsize is not int64 on every OS
}

func readInt(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}
