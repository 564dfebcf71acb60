package server

// The runner installer. GET /runner answers a POSIX sh script that
// downloads dstack-runner from this server, checks its SHA-256, installs it
// and, as root where systemd runs, a systemd unit:
//
//	curl -fsSL http://server:3000/runner -o get-dstack-runner.sh
//	sudo sh get-dstack-runner.sh
//
// GET /runner/download/{os}/{arch}/dstack-runner answers the binary, with
// its SHA-256 in X-Checksum-Sha256; .../dstack-runner.sha256 answers the
// same in sha256sum's format, which is what the script checks against.
//
// The routes are public: neither the script nor the binary holds a secret,
// and the machine that runs them has no token yet (the user gives it one
// afterwards with `dstack-runner config --token`).

import (
	"bytes"
	"crypto/sha256"
	"debug/elf"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"text/template"
)

//go:embed get-dstack-runner.sh.tmpl
var installerSource string

// installerScript is the script GET /runner answers, with the server's URL
// filled in.
var installerScript = template.Must(template.New("get-dstack-runner.sh").Option("missingkey=error").Parse(installerSource))

// installerURL matches the URLs the script may be given: it quotes the URL
// in single quotes, so a quote, a backslash, a space or a newline must
// never reach it, whatever a request's Host header says.
var installerURL = regexp.MustCompile(`^https?://[A-Za-z0-9.\-_:\[\]]+(/[A-Za-z0-9._~/\-]*)?$`)

// installerBaseURL is the URL the installer downloads from: ExternalURL
// when set, else the scheme and Host the request came with (a proxy's
// X-Forwarded-Proto wins over the scheme; it only changes the answer to
// the one who sent it).
func installerBaseURL(externalURL string, r *http.Request) (string, error) {
	u := externalURL
	if u == "" {
		if r.Host == "" {
			return "", invalid("the request names no Host: the server cannot tell the installer where to download from; start the server with --external-url")
		}
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		if p := r.Header.Get("X-Forwarded-Proto"); p == "http" || p == "https" {
			scheme = p
		}
		u = scheme + "://" + r.Host
	}
	u = strings.TrimRight(u, "/")
	if !installerURL.MatchString(u) {
		return "", invalid("the server URL %q cannot go into the installer: use a plain http:// or https:// URL (--external-url)", u)
	}
	return u, nil
}

// renderInstaller returns the installer script for the server at baseURL.
func renderInstaller(baseURL string) ([]byte, error) {
	var b bytes.Buffer
	if err := installerScript.Execute(&b, struct{ URL string }{baseURL}); err != nil {
		return nil, fmt.Errorf("render the runner installer: %w", err)
	}
	return b.Bytes(), nil
}

func (s *Server) handleRunnerInstaller(w http.ResponseWriter, r *http.Request) {
	base, err := installerBaseURL(s.cfg.ExternalURL, r)
	if err == nil {
		var script []byte
		if script, err = renderInstaller(base); err == nil {
			w.Header().Set("Content-Type", "text/x-shellscript; charset=utf-8")
			w.Header().Set("Content-Disposition", `inline; filename="get-dstack-runner.sh"`)
			w.Header().Set("Cache-Control", "no-cache")
			_, _ = w.Write(script)
			return
		}
	}
	s.writeError(w, r, err)
}

// RunnerBinariesAt lists the runner binaries to serve from path: path
// itself and, beside it, those named like it with a -linux-ARCH suffix
// (dstack-runner-linux-arm64), the ones that exist. The server tells their
// architectures apart by their ELF headers, so the names are only a habit.
func RunnerBinariesAt(path string) []string {
	var out []string
	if st, err := os.Stat(path); err == nil && st.Mode().IsRegular() {
		out = append(out, path)
	}
	more, _ := filepath.Glob(path + "-linux-*")
	for _, p := range more {
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && !strings.HasSuffix(p, ".sha256") {
			out = append(out, p)
		}
	}
	return out
}

// elfPlatform is the OS and architecture an executable was built for, as
// GOOS and GOARCH name them.
func elfPlatform(f io.ReaderAt) (goos, goarch string, err error) {
	ef, err := elf.NewFile(f)
	if err != nil {
		return "", "", errors.New("not an ELF executable (dstack-runner runs on Linux: build it with GOOS=linux)")
	}
	switch ef.OSABI {
	case elf.ELFOSABI_NONE, elf.ELFOSABI_LINUX:
		goos = "linux"
	default:
		return "", "", fmt.Errorf("an executable for %s, not Linux", ef.OSABI)
	}
	switch ef.Machine {
	case elf.EM_X86_64:
		goarch = "amd64"
	case elf.EM_AARCH64:
		goarch = "arm64"
	case elf.EM_386:
		goarch = "386"
	case elf.EM_ARM:
		goarch = "arm"
	case elf.EM_RISCV:
		goarch = "riscv64"
	case elf.EM_PPC64:
		goarch = "ppc64le"
	case elf.EM_S390:
		goarch = "s390x"
	default:
		return "", "", fmt.Errorf("an executable for %s, which the installer does not know", ef.Machine)
	}
	return goos, goarch, nil
}

// openRunnerBinary opens the configured binary built for goos/goarch. The
// caller serves from the file it returns, so a binary replaced meanwhile
// (an upgrade) is never served with the other one's checksum.
func (s *Server) openRunnerBinary(goos, goarch string) (*os.File, error) {
	var have []string
	for _, p := range s.cfg.RunnerBinaries {
		f, err := os.Open(p)
		if err != nil {
			s.log.Warn("runner binary not served", "path", p, "err", err)
			continue
		}
		o, a, err := elfPlatform(f)
		if err != nil {
			f.Close()
			s.log.Warn("runner binary not served", "path", p, "err", err)
			continue
		}
		if o == goos && a == goarch {
			return f, nil
		}
		f.Close()
		have = append(have, o+"/"+a)
	}
	want := goos + "/" + goarch
	if len(have) == 0 {
		return nil, notFound("this server has no dstack-runner binary to give out (for %s or any other platform): its administrator builds one (make build) and starts the server with --runner-binary", want)
	}
	slices.Sort(have)
	return nil, notFound("this server has no dstack-runner binary for %s, only for %s: its administrator builds one (GOOS=%s GOARCH=%s, saved as dstack-runner-%s-%s beside --runner-binary) and restarts the server",
		want, strings.Join(slices.Compact(have), ", "), goos, goarch, goos, goarch)
}

// runnerBinary opens the binary a download route names and reads its
// SHA-256.
func (s *Server) runnerBinary(r *http.Request) (*os.File, os.FileInfo, string, error) {
	goos, goarch := r.PathValue("os"), r.PathValue("arch")
	if goos != "linux" {
		return nil, nil, "", notFound("dstack-runner runs on Linux only, not on %s", goos)
	}
	f, err := s.openRunnerBinary(goos, goarch)
	if err != nil {
		return nil, nil, "", err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, "", fmt.Errorf("runner binary: %w", err)
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, st.Size())); err != nil {
		f.Close()
		return nil, nil, "", fmt.Errorf("runner binary checksum: %w", err)
	}
	return f, st, hex.EncodeToString(h.Sum(nil)), nil
}

func (s *Server) handleRunnerBinary(w http.ResponseWriter, r *http.Request) {
	f, st, sum, err := s.runnerBinary(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("X-Checksum-Sha256", sum)
	w.Header().Set("ETag", `"`+sum+`"`)
	w.Header().Set("Cache-Control", "no-cache")
	// ServeContent sets Content-Length and answers Range and
	// If-None-Match requests.
	http.ServeContent(w, r, "dstack-runner", st.ModTime(), io.NewSectionReader(f, 0, st.Size()))
}

func (s *Server) handleRunnerChecksum(w http.ResponseWriter, r *http.Request) {
	f, _, sum, err := s.runnerBinary(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	f.Close()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	fmt.Fprintf(w, "%s  dstack-runner\n", sum) //nolint:gosec // a hex digest as text/plain
}
