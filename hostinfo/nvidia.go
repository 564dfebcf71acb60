package hostinfo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/dstackai/dstack/api"
)

// NvidiaSMIArgs are the arguments GPUs are queried with; ParseNvidiaSMI reads
// what they print.
var NvidiaSMIArgs = []string{"--query-gpu=name,memory.total", "--format=csv,noheader,nounits"}

// ErrDriverFailure says nvidia-smi is installed but cannot talk to the driver:
// the GPUs, if any, are unusable until the driver is fixed.
var ErrDriverFailure = errors.New("nvidia-smi cannot communicate with the NVIDIA driver")

// driverFailureMarker starts nvidia-smi's message when the driver is not loaded.
const driverFailureMarker = "NVIDIA-SMI has failed"

// noDevicesMarker is what nvidia-smi prints on a host with a driver but no GPU.
const noDevicesMarker = "No devices were found"

// ParseNvidiaSMI parses the output of `nvidia-smi --query-gpu=name,memory.total
// --format=csv,noheader,nounits`: one "name, MiB" line per GPU. Empty output
// and "No devices were found" mean no GPU; the driver-failure message gives
// ErrDriverFailure. A memory of "[N/A]" (some integrated and MIG setups) is
// reported as 0. Any other line that does not parse is an error: GPUs are
// never guessed.
func ParseNvidiaSMI(out []byte) ([]api.GPU, error) {
	text := string(out)
	if strings.Contains(text, driverFailureMarker) {
		return nil, ErrDriverFailure
	}
	var gpus []api.GPU
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if strings.HasPrefix(line, noDevicesMarker) {
			continue
		}
		// The name may not contain a comma in practice, but the memory is
		// always the last field: split there.
		cut := strings.LastIndexByte(line, ',')
		if cut < 0 {
			return nil, fmt.Errorf("nvidia-smi output line %d %q: want \"name, memory\"", i+1, line)
		}
		name := strings.TrimSpace(line[:cut])
		mem := strings.TrimSpace(line[cut+1:])
		if name == "" {
			return nil, fmt.Errorf("nvidia-smi output line %d %q: empty GPU name", i+1, line)
		}
		var mib int64
		if mem != "[N/A]" && mem != "N/A" {
			v, err := strconv.ParseInt(mem, 10, 64)
			if err != nil || v < 0 {
				return nil, fmt.Errorf("nvidia-smi output line %d %q: memory %q is not a number of MiB", i+1, line, mem)
			}
			mib = v
		}
		gpus = append(gpus, api.GPU{Name: name, MemoryMiB: mib})
	}
	return gpus, nil
}

// queryGPUs runs nvidia-smi (looked up in PATH unless bin is a path). A
// missing binary means no GPU and no error; a failing one gives an error the
// caller logs, and no GPU.
func queryGPUs(ctx context.Context, bin string) ([]api.GPU, error) {
	path, err := exec.LookPath(bin)
	if err != nil {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, NvidiaSMIArgs...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	runErr := cmd.Run()
	gpus, parseErr := ParseNvidiaSMI(out.Bytes())
	switch {
	case errors.Is(parseErr, ErrDriverFailure):
		return nil, fmt.Errorf("%s: %w: %s", path, parseErr, firstLine(out.Bytes()))
	case runErr != nil && strings.Contains(out.String(), noDevicesMarker):
		return nil, nil
	case runErr != nil:
		return nil, fmt.Errorf("%s: %w: %s", path, runErr, firstLine(out.Bytes()))
	case parseErr != nil:
		return nil, parseErr
	}
	return gpus, nil
}

func firstLine(b []byte) string {
	s := strings.TrimSpace(string(b))
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 300 {
		s = s[:300]
	}
	return s
}
