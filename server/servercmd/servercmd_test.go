package servercmd

import (
	"bytes"
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dstackai/dstack/server"
	"github.com/dstackai/dstack/userconfig"
)

func TestClientURL(t *testing.T) {
	t.Parallel()
	tests := []struct{ listen, external, want string }{
		{"http://[::]:3000", "", "http://127.0.0.1:3000"},
		{"http://0.0.0.0:3000", "", "http://127.0.0.1:3000"},
		{"https://[::]:8443", "", "https://127.0.0.1:8443"},
		{"http://127.0.0.1:3000", "", "http://127.0.0.1:3000"},
		{"http://192.168.1.5:3000", "", "http://192.168.1.5:3000"},
		{"http://[::1]:3000", "", "http://[::1]:3000"},
		{"http://[::]:3000", "https://dstack.example.com/", "https://dstack.example.com"},
		{"http://[::]:3000", "https://example.com/dstack", "https://example.com/dstack"},
	}
	for _, tt := range tests {
		if got := clientURL(tt.listen, tt.external); got != tt.want {
			t.Errorf("clientURL(%q, %q) = %q, want %q", tt.listen, tt.external, got, tt.want)
		}
	}
}

func TestCheckExternalURL(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{"", "https://dstack.example.com", "http://10.0.0.1:3000", "https://example.com/dstack/"} {
		if err := checkExternalURL(ok); err != nil {
			t.Errorf("checkExternalURL(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"dstack.example.com", "ftp://host", "https://", "http://user:pw@host", "https://host/?q=1", "://x"} {
		err := checkExternalURL(bad)
		if err == nil || !strings.Contains(err.Error(), "--external-url") || !strings.Contains(err.Error(), "https://dstack.example.com") {
			t.Errorf("checkExternalURL(%q) = %v, want an error naming the flag and an example", bad, err)
		}
	}
}

func FuzzClientURL(f *testing.F) {
	f.Add("http://[::]:3000", "")
	f.Add("http://0.0.0.0:1", "https://x.example/")
	f.Fuzz(func(t *testing.T, listen, external string) {
		got := clientURL(listen, external)
		if checkExternalURL(external) == nil && external != "" && got != strings.TrimRight(external, "/") {
			t.Fatalf("clientURL(%q, %q) = %q: not the external URL", listen, external, got)
		}
	})
}

// TestFirstStartWritesAReachableURL starts the server as `dstack server`
// does on all interfaces, the first time: it prints and writes into the
// CLI config a URL a client dials (the external URL when given, else
// loopback), never the listening address [::].
func TestFirstStartWritesAReachableURL(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name, host, external string
		want                 func(port string) string
	}{
		{"external URL", "0.0.0.0", "https://dstack.example.com/", func(string) string { return "https://dstack.example.com" }},
		{"all IPv4 interfaces", "0.0.0.0", "", func(p string) string { return "http://127.0.0.1:" + p }},
		{"all interfaces", "::", "", func(p string) string { return "http://127.0.0.1:" + p }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			cliConfig := filepath.Join(dir, "config.yaml")
			cfg := server.Defaults
			cfg.Host, cfg.Port, cfg.DataDir, cfg.ExternalURL = tt.host, 0, filepath.Join(dir, "server"), tt.external
			cfg.AWS.Disabled = true
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var out bytes.Buffer
			srv, err := start(ctx, &out, cfg, cliConfig)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = srv.Stop() })
			port := srv.URL()[strings.LastIndex(srv.URL(), ":")+1:]
			want := tt.want(port)
			if !strings.Contains(out.String(), "The dstack server is running at "+want+"\n") || strings.Contains(out.String(), "[::]") {
				t.Errorf("output does not name %s (or names [::]):\n%s", want, out.String())
			}
			c, err := userconfig.Load(cliConfig)
			if err != nil {
				t.Fatal(err)
			}
			if c.Server != want || c.Token != srv.AdminToken() || c.Token == "" {
				t.Errorf("CLI config %+v, want server %s and the admin token", c, want)
			}
			if tt.external == "" {
				resp, err := http.Get(c.Server + "/healthz")
				if err != nil {
					t.Fatalf("the written URL %s is not reachable: %v", c.Server, err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					t.Errorf("GET %s/healthz: %s", c.Server, resp.Status)
				}
			}
		})
	}
}
