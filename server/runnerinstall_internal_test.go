package server

import (
	"crypto/tls"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestInstallerBaseURL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		external string
		host     string
		tls      bool
		proto    string // X-Forwarded-Proto
		want     string // "" for an error
	}{
		{name: "request host", host: "10.0.0.5:3000", want: "http://10.0.0.5:3000"},
		{name: "TLS", host: "dstack.example.com", tls: true, want: "https://dstack.example.com"},
		{name: "proxy says https", host: "dstack.example.com", proto: "https", want: "https://dstack.example.com"},
		{name: "proxy says nonsense", host: "dstack.example.com", proto: "gopher", want: "http://dstack.example.com"},
		{name: "IPv6 host", host: "[::1]:3000", want: "http://[::1]:3000"},
		{name: "external URL wins", external: "https://dstack.example.com/", host: "127.0.0.1:3000", want: "https://dstack.example.com"},
		{name: "external URL with a path", external: "https://example.com/dstack", host: "x", want: "https://example.com/dstack"},
		{name: "no host", host: "", want: ""},
		{name: "quote in host", host: "a'b", want: ""},
		{name: "command in host", host: "x$(reboot)", want: ""},
		{name: "space in external URL", external: "http://a b", want: ""},
		{name: "not http", external: "ftp://example.com", want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r, _ := http.NewRequest(http.MethodGet, "http://placeholder/runner", nil)
			r.Host = tt.host
			if tt.tls {
				r.TLS = &tls.ConnectionState{}
			}
			if tt.proto != "" {
				r.Header.Set("X-Forwarded-Proto", tt.proto)
			}
			got, err := installerBaseURL(tt.external, r)
			switch {
			case tt.want == "" && err == nil:
				t.Errorf("got %q, want an error", got)
			case tt.want != "" && (err != nil || got != tt.want):
				t.Errorf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

// FuzzInstallerBaseURL: whatever a request's Host says, what reaches the
// script is a plain URL that cannot leave its single quotes.
func FuzzInstallerBaseURL(f *testing.F) {
	for _, s := range []string{"127.0.0.1:3000", "[::1]:80", "a'b", "x\ny", "$(id)", "host/path"} {
		f.Add(s, "")
		f.Add("", "http://"+s)
	}
	f.Fuzz(func(t *testing.T, host, external string) {
		r := &http.Request{Host: host, Header: http.Header{}}
		u, err := installerBaseURL(external, r)
		if err != nil {
			return
		}
		if strings.ContainsAny(u, "'\"\\`$ \t\r\n;&|<>(){}*?!#") {
			t.Fatalf("URL %q would reach the script", u)
		}
		if _, err := renderInstaller(u); err != nil {
			t.Fatal(err)
		}
	})
}

// TestInstallerScriptParses checks the script's syntax with every POSIX
// shell at hand (sh -n), and that it names what the README promises.
func TestInstallerScriptParses(t *testing.T) {
	t.Parallel()
	script, err := renderInstaller("https://dstack.example.com")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"#!/bin/sh\n",
		"default_server='https://dstack.example.com'",
		"DSTACK_INSTALL_DIR", "DSTACK_NO_SYSTEMD", "DSTACK_SYSTEMD_DIR",
		"/etc/systemd/system", "Restart=always", "After=network-online.target",
	} {
		if !strings.Contains(string(script), want) {
			t.Errorf("the script does not hold %q", want)
		}
	}
	if strings.Contains(string(script), "{{") {
		t.Error("the script holds an unfilled {{ placeholder")
	}
	path := filepath.Join(t.TempDir(), "get-dstack-runner.sh")
	if err := os.WriteFile(path, script, 0o644); err != nil {
		t.Fatal(err)
	}
	shells := 0
	for _, sh := range [][]string{{"sh"}, {"dash"}, {"bash", "--posix"}, {"busybox", "sh"}} {
		if _, err := exec.LookPath(sh[0]); err != nil {
			continue
		}
		shells++
		args := append(append(sh[1:len(sh):len(sh)], "-n"), path)
		if out, err := exec.Command(sh[0], args...).CombinedOutput(); err != nil {
			t.Errorf("%s -n: %v\n%s", strings.Join(sh, " "), err, out)
		}
	}
	if shells == 0 {
		t.Skip("no POSIX shell found")
	}
}
