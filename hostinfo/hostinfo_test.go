package hostinfo

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/dstackai/dstack/api"
)

func TestParseNvidiaSMI(t *testing.T) {
	t.Parallel()
	a10 := func(n int, g api.GPU) []api.GPU {
		out := make([]api.GPU, n)
		for i := range out {
			out[i] = g
		}
		return out
	}
	tests := []struct {
		file    string
		want    []api.GPU
		wantErr error
	}{
		{file: "no_gpus.txt"},
		{file: "no_devices.txt"},
		{file: "a100_sxm4_40gb.txt", want: []api.GPU{{Name: "NVIDIA A100-SXM4-40GB", MemoryMiB: 40960}}},
		{file: "h100_80gb_hbm3_x8.txt", want: a10(8, api.GPU{Name: "NVIDIA H100 80GB HBM3", MemoryMiB: 81559})},
		{file: "mixed_t4.txt", want: []api.GPU{
			{Name: "Tesla T4", MemoryMiB: 15360},
			{Name: "Tesla T4", MemoryMiB: 15360},
			{Name: "Tesla V100-SXM2-16GB", MemoryMiB: 16384},
			{Name: "NVIDIA A10G", MemoryMiB: 23028},
		}},
		{file: "memory_na.txt", want: []api.GPU{{Name: "NVIDIA GH200 480GB", MemoryMiB: 0}}},
		{file: "crlf.txt", want: a10(2, api.GPU{Name: "Tesla T4", MemoryMiB: 15360})},
		{file: "driver_failure.txt", wantErr: ErrDriverFailure},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			t.Parallel()
			out, err := os.ReadFile(filepath.Join("testdata", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			got, err := ParseNvidiaSMI(out)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseNvidiaSMIRejects(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, out string }{
		{"no comma", "Tesla T4 15360\n"},
		{"memory not a number", "Tesla T4, lots\n"},
		{"negative memory", "Tesla T4, -1\n"},
		{"empty name", " , 15360\n"},
		{"header line", "name, memory.total [MiB]\nTesla T4, 15360\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got, err := ParseNvidiaSMI([]byte(tt.out)); err == nil {
				t.Errorf("ParseNvidiaSMI(%q) = %+v, want an error", tt.out, got)
			}
		})
	}
}

func FuzzParseNvidiaSMI(f *testing.F) {
	entries, err := os.ReadDir("testdata")
	if err != nil {
		f.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".txt") {
			continue
		}
		b, err := os.ReadFile(filepath.Join("testdata", e.Name()))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("a,b,c, 12\n,\n"))
	f.Fuzz(func(t *testing.T, out []byte) {
		gpus, err := ParseNvidiaSMI(out)
		if err != nil {
			if gpus != nil {
				t.Fatalf("error %v with GPUs %+v", err, gpus)
			}
			return
		}
		for _, g := range gpus {
			if strings.TrimSpace(g.Name) == "" || g.MemoryMiB < 0 {
				t.Fatalf("bad GPU %+v from %q", g, out)
			}
		}
	})
}

func TestParseCPUMax(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in     string
		want   float64
		wantOK bool
	}{
		{"max 100000\n", 0, false},
		{"200000 100000\n", 2, true},
		{"150000 100000", 1.5, true},
		{"50000", 0.5, true},
		{"", 0, false},
		{"abc 100000", 0, false},
		{"100000 0", 0, false},
	}
	for _, tt := range tests {
		got, ok := ParseCPUMax(tt.in)
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("ParseCPUMax(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.wantOK)
		}
	}
}

func TestParseMeminfoTotal(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{"MemTotal:       16318132 kB\nMemFree:         1234 kB\n", 16318132 * 1024, false},
		{"MemFree: 1 kB\nMemTotal: 2048 kB\n", 2048 * 1024, false},
		{"MemFree: 1 kB\n", 0, true},
		{"MemTotal: many kB\n", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseMeminfoTotal(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseMeminfoTotal(%q) = %v, %v; want %v, err %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

// fakeRoot writes files (path -> content) under a temporary root.
func fakeRoot(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for p, content := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestCgroupLimits(t *testing.T) {
	t.Parallel()
	const meminfo = "MemTotal: 8388608 kB\n" // 8 GiB
	tests := []struct {
		name    string
		files   map[string]string
		wantCPU int
		wantMem int64
	}{
		{"no cgroup", map[string]string{"/proc/meminfo": meminfo}, runtime.NumCPU(), 8192},
		{"v2 limits", map[string]string{
			"/proc/meminfo":             meminfo,
			"/sys/fs/cgroup/cpu.max":    "100000 100000\n",
			"/sys/fs/cgroup/memory.max": "1073741824\n",
		}, 1, 1024},
		{"v2 unlimited", map[string]string{
			"/proc/meminfo":             meminfo,
			"/sys/fs/cgroup/cpu.max":    "max 100000\n",
			"/sys/fs/cgroup/memory.max": "max\n",
		}, runtime.NumCPU(), 8192},
		{"v2 limit above host", map[string]string{
			"/proc/meminfo":             meminfo,
			"/sys/fs/cgroup/memory.max": "17179869184\n",
		}, runtime.NumCPU(), 8192},
		{"v1 limits", map[string]string{
			"/proc/meminfo":                               meminfo,
			"/sys/fs/cgroup/cpu/cpu.cfs_quota_us":         "50000\n",
			"/sys/fs/cgroup/cpu/cpu.cfs_period_us":        "100000\n",
			"/sys/fs/cgroup/memory/memory.limit_in_bytes": "536870912\n",
		}, 1, 512},
		{"v1 unlimited", map[string]string{
			"/proc/meminfo":                               meminfo,
			"/sys/fs/cgroup/cpu/cpu.cfs_quota_us":         "-1\n",
			"/sys/fs/cgroup/cpu/cpu.cfs_period_us":        "100000\n",
			"/sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n",
		}, runtime.NumCPU(), 8192},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			root := fakeRoot(t, tt.files)
			if got := CPUs(root); got != tt.wantCPU {
				t.Errorf("CPUs = %d, want %d", got, tt.wantCPU)
			}
			got, err := MemoryMiB(root)
			if err != nil || got != tt.wantMem {
				t.Errorf("MemoryMiB = %d, %v; want %d", got, err, tt.wantMem)
			}
		})
	}
}

// fakeNvidiaSMI writes an executable that prints a recorded output and exits
// with code.
func fakeNvidiaSMI(t *testing.T, recorded string, code int) string {
	t.Helper()
	dir := t.TempDir()
	out := filepath.Join(dir, "out.txt")
	b, err := os.ReadFile(filepath.Join("testdata", recorded))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(out, b, 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "nvidia-smi")
	script := "#!/bin/sh\ncat '" + out + "'\nexit " + strconv.Itoa(code) + "\n"
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

func TestDetect(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		bin      func(t *testing.T) string
		wantGPUs int
	}{
		{"absent nvidia-smi", func(t *testing.T) string { return filepath.Join(t.TempDir(), "missing-nvidia-smi") }, 0},
		{"eight H100", func(t *testing.T) string { return fakeNvidiaSMI(t, "h100_80gb_hbm3_x8.txt", 0) }, 8},
		{"driver failure", func(t *testing.T) string { return fakeNvidiaSMI(t, "driver_failure.txt", 9) }, 0},
		{"no devices", func(t *testing.T) string { return fakeNvidiaSMI(t, "no_devices.txt", 6) }, 0},
		{"non-zero exit", func(t *testing.T) string { return fakeNvidiaSMI(t, "a100_sxm4_40gb.txt", 1) }, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res, err := Detect(context.Background(), Options{DataDir: t.TempDir(), NvidiaSMI: tt.bin(t), Logger: testLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			if len(res.GPUs) != tt.wantGPUs {
				t.Errorf("GPUs = %+v, want %d", res.GPUs, tt.wantGPUs)
			}
			if res.CPUs < 1 || res.MemoryMiB <= 0 || res.DiskMiB <= 0 {
				t.Errorf("implausible resources %+v", res)
			}
		})
	}
}

func TestDetectMissingDataDir(t *testing.T) {
	t.Parallel()
	_, err := Detect(context.Background(), Options{DataDir: filepath.Join(t.TempDir(), "nope"), NvidiaSMI: "/nonexistent/nvidia-smi"})
	if err == nil {
		t.Fatal("Detect with a missing data dir: want an error")
	}
}
