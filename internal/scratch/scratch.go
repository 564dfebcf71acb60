// Package scratch builds Docker images FROM scratch through the Engine's
// build API, with the build context in memory: no registry, nothing pulled.
// The local backend's runner image and the test images are built with it;
// a static busybox gives them a shell.
package scratch

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/moby/moby/api/types/build"
	"github.com/moby/moby/client"
)

// BusyboxPaths are where FindBusybox looks for a static busybox: Debian's
// busybox-static package installs /bin/busybox.
var BusyboxPaths = []string{"/bin/busybox", "/usr/bin/busybox"}

// ReadStatic reads an executable that must run FROM scratch: an ELF file
// with no dynamic loader. what names it in errors and fix says how to get a
// good one.
func ReadStatic(path, what, fix string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w (%s)", what, err, fix)
	}
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("%s %s is not an ELF executable: %w (%s)", what, path, err, fix)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return nil, fmt.Errorf("%s %s is dynamically linked: %s", what, path, fix)
		}
	}
	return b, nil
}

// FindBusybox returns the first static busybox of BusyboxPaths, or "".
func FindBusybox() string {
	for _, p := range BusyboxPaths {
		if _, err := ReadStatic(p, "busybox", ""); err == nil {
			return p
		}
	}
	return ""
}

// Entry is one file, directory or symlink of a build context.
type Entry struct {
	Name string
	Mode int64
	Data []byte
	Dir  bool
	Link string // a symlink to this
}

// BusyboxEntries are the static busybox at path as dir/busybox and its
// applets (/bin/sh among them) as symlinks to it.
func BusyboxEntries(path, dir string) ([]Entry, error) {
	bin, err := ReadStatic(path, "busybox", "install Debian's busybox-static")
	if err != nil {
		return nil, err
	}
	list, err := exec.Command(path, "--list").Output() //nolint:noctx // busybox --list prints and exits
	if err != nil {
		return nil, fmt.Errorf("%s --list: %w", path, err)
	}
	out := []Entry{{Name: dir + "/", Mode: 0o755, Dir: true}, {Name: dir + "/busybox", Mode: 0o755, Data: bin}}
	for _, applet := range strings.Fields(string(list)) {
		if applet != "busybox" {
			out = append(out, Entry{Name: dir + "/" + applet, Mode: 0o777, Link: "busybox"})
		}
	}
	return out, nil
}

// Tar is a build context of entries, in their order, with a fixed time, so
// that the same entries give the same context and hit the build cache.
func Tar(entries []Entry) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.Name, Mode: e.Mode, Size: int64(len(e.Data)), Typeflag: tar.TypeReg,
			ModTime: time.Unix(0, 0), Format: tar.FormatPAX}
		switch {
		case e.Dir:
			h.Typeflag = tar.TypeDir
		case e.Link != "":
			h.Typeflag, h.Linkname = tar.TypeSymlink, e.Link
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.Data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Builder is the Engine call Build makes; *client.Client has it.
type Builder interface {
	ImageBuild(ctx context.Context, buildContext io.Reader, options client.ImageBuildOptions) (client.ImageBuildResult, error)
}

// Build builds the context of entries with the classic builder (BuildKit
// over the API needs a session), removing intermediate containers, and
// returns the error the build reports, with its last lines of output.
func Build(ctx context.Context, b Builder, entries []Entry, opts client.ImageBuildOptions) error {
	buildContext, err := Tar(entries)
	if err != nil {
		return err
	}
	opts.Version, opts.Remove, opts.ForceRemove = build.BuilderV1, true, true
	resp, err := b.ImageBuild(ctx, bytes.NewReader(buildContext), opts)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return readOutput(resp.Body)
}

// readOutput reads the build's JSON message stream to its end and returns
// the error it reports, with the last lines of output for context.
func readOutput(r io.Reader) error {
	dec := json.NewDecoder(r)
	var tail []string
	for {
		var m struct {
			Stream      string `json:"stream"`
			Error       string `json:"error"`
			ErrorDetail *struct {
				Message string `json:"message"`
			} `json:"errorDetail"`
		}
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("read the build output: %w", err)
		}
		if s := strings.TrimSpace(m.Stream); s != "" {
			tail = append(tail, s)
			if len(tail) > 10 {
				tail = tail[1:]
			}
		}
		msg := m.Error
		if m.ErrorDetail != nil && m.ErrorDetail.Message != "" {
			msg = m.ErrorDetail.Message
		}
		if msg != "" {
			return fmt.Errorf("%s (last output: %s)", msg, strings.Join(tail, " | "))
		}
	}
}
