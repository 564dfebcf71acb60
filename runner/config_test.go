package runner

import (
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/dstackai/dstack/jobdir"
)

func TestConfigSources(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		file string
		env  map[string]string
		want Config
	}{
		{"file only", "server: http://example.com:3000\ntoken: T1\nname: gpu-box\n", nil,
			Config{Server: "http://example.com:3000", Token: "T1", Name: "gpu-box", DataDir: "/data", Executor: "shell"}},
		{"environment wins", "server: http://example.com:3000\ntoken: T1\n",
			map[string]string{EnvServer: "https://dstack.example.org", EnvToken: "T2"},
			Config{Server: "https://dstack.example.org", Token: "T2", Name: "default-name", DataDir: "/data", Executor: "shell"}},
		{"file sets data dir", "token: T1\ndata_dir: /srv/runner\n", nil,
			Config{Server: DefaultServer, Token: "T1", Name: "default-name", DataDir: "/srv/runner", Executor: "shell"}},
		{"file sets the executor", "token: T1\nexecutor: docker\nbash_image: ubuntu:24.04\n", nil,
			Config{Server: DefaultServer, Token: "T1", Name: "default-name", DataDir: "/data", Executor: "docker", BashImage: "ubuntu:24.04"}},
		{"join token from the environment", "server: http://example.com:3000\n",
			map[string]string{EnvJoinToken: "J1"},
			Config{Server: "http://example.com:3000", JoinToken: "J1", Name: "default-name", DataDir: "/data", Executor: "shell"}},
		{"spot watch from the environment", "token: T1\n",
			map[string]string{EnvWatchSpot: "1", EnvIMDSEndpoint: "http://127.0.0.1:1338"},
			Config{Server: DefaultServer, Token: "T1", Name: "default-name", DataDir: "/data", Executor: "shell",
				WatchSpotInterruption: true, IMDSEndpoint: "http://127.0.0.1:1338"}},
		{"spot watch off in the environment", "token: T1\n", map[string]string{EnvWatchSpot: "false"},
			Config{Server: DefaultServer, Token: "T1", Name: "default-name", DataDir: "/data", Executor: "shell"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "config.yaml")
			if err := os.WriteFile(path, []byte(tt.file), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg := Config{Server: DefaultServer, Name: "default-name", DataDir: "/data", Executor: "shell"}
			if err := cfg.LoadFile(path); err != nil {
				t.Fatal(err)
			}
			cfg.ApplyEnv(func(k string) string { return tt.env[k] })
			if !reflect.DeepEqual(cfg, tt.want) {
				t.Errorf("got %+v, want %+v", cfg, tt.want)
			}
			if err := cfg.Validate(); err != nil {
				t.Errorf("Validate: %v", err)
			}
		})
	}
}

func TestConfigFileErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("server: [unclosed\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		path, want string
	}{
		{filepath.Join(dir, "missing.yaml"), "dstack-runner config --token"},
		{bad, "not valid YAML"},
	}
	for _, tt := range tests {
		var cfg Config
		err := cfg.LoadFile(tt.path)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("LoadFile(%s) = %v, want an error mentioning %q", tt.path, err, tt.want)
		}
	}
}

func TestConfigWriteFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "sub", "config.yaml")
	in := Config{Server: "http://10.0.0.1:3000", Token: "secret", Name: "box", StopGrace: time.Second}
	if err := in.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", st.Mode().Perm())
	}
	var out Config
	if err := out.LoadFile(path); err != nil {
		t.Fatal(err)
	}
	if out.Server != in.Server || out.Token != in.Token || out.Name != in.Name || out.StopGrace != 0 {
		t.Errorf("round trip: got %+v", out)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	good := Config{Server: DefaultServer, Token: "T", Name: "n", DataDir: "/d", Executor: "shell"}
	tests := []struct {
		name   string
		change func(*Config)
		want   string // in the error; "" for none
	}{
		{"valid", func(*Config) {}, ""},
		{"https", func(c *Config) { c.Server = "https://dstack.example.org/prefix" }, ""},
		{"no scheme", func(c *Config) { c.Server = "127.0.0.1:3000" }, "--server"},
		{"ftp", func(c *Config) { c.Server = "ftp://host" }, "--server"},
		{"no token", func(c *Config) { c.Token = " " }, "dstack-runner config --token"},
		{"join token", func(c *Config) { c.Token, c.JoinToken = "", "jt" }, ""},
		{"both tokens", func(c *Config) { c.JoinToken = "jt" }, "remove one"},
		{"no name", func(c *Config) { c.Name = "" }, "--name"},
		{"long name", func(c *Config) { c.Name = strings.Repeat("x", 201) }, "--name"},
		{"name with a newline", func(c *Config) { c.Name = "a\nb" }, "control character"},
		{"name with an escape", func(c *Config) { c.Name = "box\x1b[2J" }, "control character"},
		{"name with spaces and accents", func(c *Config) { c.Name = "gpu box é" }, ""},
		{"no data dir", func(c *Config) { c.DataDir = "" }, "--data-dir"},
		{"docker", func(c *Config) { c.Executor = "docker" }, ""},
		{"auto", func(c *Config) { c.Executor = "auto" }, ""},
		{"unknown executor", func(c *Config) { c.Executor = "k8s" }, "unknown executor"},
		{"bash image", func(c *Config) { c.BashImage = "ubuntu:24.04" }, ""},
		{"bad bash image", func(c *Config) { c.BashImage = "ubuntu 24.04" }, "--bash-image"},
		{"negative grace", func(c *Config) { c.StopGrace = -time.Second }, "negative"},
		{"imds endpoint", func(c *Config) { c.IMDSEndpoint = "http://[fd00:ec2::254]" }, ""},
		{"bad imds endpoint", func(c *Config) { c.IMDSEndpoint = "169.254.169.254" }, "--imds-endpoint"},
		{"negative spot poll interval", func(c *Config) { c.SpotPollInterval = -time.Second }, "spot poll interval"},
		{"bad spot watch in the environment", func(c *Config) {
			c.ApplyEnv(func(k string) string { return map[string]string{EnvWatchSpot: "maybe"}[k] })
		}, EnvWatchSpot},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := good
			tt.change(&c)
			err := c.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Validate: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("Validate = %v, want an error mentioning %q", err, tt.want)
			}
		})
	}
}

func TestStateReusable(t *testing.T) {
	t.Parallel()
	now := time.Now()
	cfg := Config{Server: "http://s:3000", Name: "box"}
	good := state{Server: cfg.Server, Name: cfg.Name, RunnerID: "r1", Token: "tok", RegisteredAt: now.Add(-time.Hour), ExpiresAt: now.Add(30 * 24 * time.Hour)}
	tests := []struct {
		name   string
		change func(*state)
		want   bool
	}{
		{"valid", func(*state) {}, true},
		{"other server", func(s *state) { s.Server = "http://other:3000" }, false},
		{"other name", func(s *state) { s.Name = "other" }, false},
		{"expired", func(s *state) { s.ExpiresAt = now.Add(-time.Minute) }, false},
		{"expiring within a day", func(s *state) { s.RegisteredAt = now.Add(-30 * 24 * time.Hour); s.ExpiresAt = now.Add(time.Hour) }, false},
		{"short life, early", func(s *state) { s.RegisteredAt = now.Add(-time.Minute); s.ExpiresAt = now.Add(time.Hour) }, true},
		{"died in a job", func(s *state) { s.JobID = "j1" }, false},
		{"no token", func(s *state) { s.Token = "" }, false},
	}
	for _, tt := range tests {
		s := good
		tt.change(&s)
		if got := s.reusable(cfg, now); got != tt.want {
			t.Errorf("%s: reusable = %v, want %v", tt.name, got, tt.want)
		}
	}
	var none *state
	if none.reusable(cfg, now) {
		t.Error("nil state is reusable")
	}
}

func TestStateRoundTrip(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if s, err := loadState(dir); s != nil || err != nil {
		t.Fatalf("no file: %v, %v", s, err)
	}
	in := &state{Server: "http://s", Name: "n", RunnerID: "r", Token: "t", ExpiresAt: time.Now().Round(0).UTC(), HeartbeatInterval: 10 * time.Second, JobID: "j"}
	if err := saveState(dir, in, true); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(statePath(dir))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("state file: %v, %v", st, err)
	}
	out, err := loadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Errorf("got %+v, want %+v", out, in)
	}
}

func TestCollectArtifacts(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, f := range []string{"model/weights.bin", "model/sub/config.json", "report.txt", "other/x"} {
		p := filepath.Join(dir, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("/etc/passwd", filepath.Join(dir, "model", "link")); err != nil {
		t.Fatal(err)
	}
	d, err := jobdir.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	files, missing, skipped, err := collectArtifacts(d, []string{"model", "report.txt", "absent", "model/sub"})
	if err != nil {
		t.Fatal(err)
	}
	var rels []string
	for _, f := range files {
		rels = append(rels, f.rel)
	}
	sort.Strings(rels)
	if want := []string{"model/sub/config.json", "model/weights.bin", "report.txt"}; !reflect.DeepEqual(rels, want) {
		t.Errorf("files %v, want %v", rels, want)
	}
	if !reflect.DeepEqual(missing, []string{"absent"}) {
		t.Errorf("missing %v", missing)
	}
	if len(skipped) != 1 || skipped[0].Name != "model/link" || !strings.Contains(skipped[0].Reason, `"/etc/passwd", outside`) {
		t.Errorf("skipped %v, want model/link, outside", skipped)
	}
	if _, _, _, err := collectArtifacts(d, []string{"../escape"}); err == nil {
		t.Error("an artifact path outside the working directory was accepted")
	}
}

// TestWorkDirApartFromDataDir: the jobs' work directory may not overlap the
// runner's data directory, also when a link hides it.
func TestWorkDirApartFromDataDir(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	data := filepath.Join(base, "data")
	if err := os.MkdirAll(filepath.Join(data, "inside"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(data, "inside"), filepath.Join(base, "link-into-data")); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		work string
		ok   bool
	}{
		{"", true}, // the default: data-work
		{filepath.Join(base, "work"), true},
		{filepath.Join(base, "data-other"), true},
		{data, false},
		{data + "/", false},
		{filepath.Join(data, "jobs"), false},
		{filepath.Join(data, "..", "data", "x"), false},
		{base, false},
		{filepath.Join(base, "link-into-data"), false},
		{filepath.Join(base, "link-into-data", "new"), false},
	}
	for _, tt := range tests {
		c := Config{Server: DefaultServer, Token: "T", Name: "n", DataDir: data, WorkDir: tt.work, Executor: "shell"}
		err := c.Validate()
		if (err == nil) != tt.ok {
			t.Errorf("work dir %q: %v, want ok=%v", tt.work, err, tt.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "--work-dir") {
			t.Errorf("error %q does not say what to set", err)
		}
	}
	if got := DefaultWorkDir("/var/lib/dstack-runner/"); got != "/var/lib/dstack-runner-work" {
		t.Errorf("DefaultWorkDir = %q", got)
	}
}

// TestConfigFileShared: `shared: true` in the file asks for a shared runner.
func TestConfigFileShared(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte("server: http://h:3000\ntoken: T\nshared: true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := DefaultConfig()
	if err := c.LoadFile(path); err != nil || !c.Shared {
		t.Fatalf("LoadFile: shared %v, %v; want shared", c.Shared, err)
	}
}
