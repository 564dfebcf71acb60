package runner

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/executor"
	"github.com/dstackai/dstack/version"
)

// Environment variables read by ApplyEnv.
const (
	EnvServer    = "DSTACK_SERVER"
	EnvToken     = "DSTACK_TOKEN"
	EnvJoinToken = "DSTACK_JOIN_TOKEN"
	// EnvWatchSpot turns on WatchSpotInterruption: 1, true or yes (0,
	// false or no turn it off).
	EnvWatchSpot    = "DSTACK_WATCH_SPOT_INTERRUPTION"
	EnvIMDSEndpoint = "DSTACK_IMDS_ENDPOINT"
)

// DefaultServer is the server a runner talks to when none is configured.
const DefaultServer = "http://127.0.0.1:3000"

// Config is a runner's configuration. The fields with yaml tags are what
// `dstack-runner config` writes to the config file; the others are set by
// whoever embeds a runner (the CLI, the local backend, tests).
type Config struct {
	// Server is the URL of the dstack server: its load balancer, or the
	// addresses of its replicas, comma-separated, which the runner uses
	// one at a time, moving to the next when one cannot be reached.
	Server string `yaml:"server"`
	// Token is the user's token; it is exchanged for a runner credential at
	// registration.
	Token string `yaml:"token"`
	// JoinToken is the single-use credential of an on-demand instance, set
	// instead of Token by whoever launched the instance (a backend): the
	// runner joins with it (POST /runners/join) rather than registering with
	// a user's token, and never registers again. See join.go.
	JoinToken string `yaml:"join_token,omitempty"`
	// Name is the runner's name as shown by `dstack runners`.
	Name string `yaml:"name"`
	// Shared registers the runner for every user's jobs, not only its
	// token's user's; only an admin's token may.
	Shared bool `yaml:"shared,omitempty"`
	// DataDir holds the runner's own files: its state (its credential),
	// and the jobs' log spools. It is kept private (0700) and no job can
	// name it.
	DataDir string `yaml:"data_dir,omitempty"`
	// WorkDir holds the jobs' working directories, one per job; empty means
	// DefaultWorkDir(DataDir), a sibling of DataDir. It must not be inside
	// DataDir, nor DataDir inside it.
	WorkDir string `yaml:"work_dir,omitempty"`
	// Executor is how jobs run: "auto" (DefaultConfig's: docker when the
	// Docker Engine answers at start, shell otherwise), "shell" (what an
	// empty Executor means) or "docker".
	Executor string `yaml:"executor,omitempty"`
	// BashImage is the image bash jobs run in with the docker executor.
	// Empty means they run on the host with the shell executor, even when
	// Docker is there (docker and python jobs name their image).
	BashImage string `yaml:"bash_image,omitempty"`

	// Resources, when set, are reported instead of the detected ones.
	Resources *api.HostResources `yaml:"-"`
	// NvidiaSMI is the nvidia-smi binary to query GPUs with.
	NvidiaSMI string `yaml:"-"`
	// ExecutorImpl, when set, runs the jobs instead of Executor's.
	ExecutorImpl executor.Executor `yaml:"-"`
	// ClaimWait is how long one claim waits on the server for a job.
	ClaimWait time.Duration `yaml:"-"`
	// StopGrace is how long a stopped job has between SIGTERM and SIGKILL.
	StopGrace time.Duration `yaml:"-"`
	// LogAckTimeout bounds how long a finished job waits, without progress,
	// for the server to acknowledge its log before its status is reported
	// (not at all once the server says its disk is full). The status then
	// says how much of the log is missing, and the rest is sent after.
	LogAckTimeout time.Duration `yaml:"-"`
	// ShutdownTimeout bounds Stop: the job in progress is stopped, its
	// artifacts uploaded and its status reported within it.
	ShutdownTimeout time.Duration `yaml:"-"`
	// MaxCodeSize bounds the unpacked size of a job's code (0: the
	// archive package's default).
	MaxCodeSize int64 `yaml:"-"`
	// Version is reported at registration; empty means version.Version.
	Version string `yaml:"-"`

	// WatchSpotInterruption makes the runner watch the instance metadata
	// of the EC2 spot instance it runs on for an interruption notice, and
	// give its job back on one (see spot.go).
	WatchSpotInterruption bool `yaml:"-"`
	// IMDSEndpoint is the instance metadata service; empty is
	// DefaultIMDSEndpoint.
	IMDSEndpoint string `yaml:"-"`
	// SpotWatcher, when set, reads the notice instead of the instance
	// metadata service at IMDSEndpoint.
	SpotWatcher SpotWatcher `yaml:"-"`
	// SpotPollInterval is how often the notice is read (0: 2s).
	SpotPollInterval time.Duration `yaml:"-"`
	// SpotUploadMargin: the artifacts of a job stopped by a notice are
	// uploaded until this long before the notice's time, and not at all
	// when less is left (0: 20s).
	SpotUploadMargin time.Duration `yaml:"-"`
	// CheckpointSettle is how long a checkpoint sync waits between its two
	// looks at each file: a file whose size or modification time changed
	// in between is being written, and waits for a later sync (0: 1s;
	// negative: no wait).
	CheckpointSettle time.Duration `yaml:"-"`

	// envErrs are the environment's values ApplyEnv could not read.
	envErrs []error
}

// DefaultConfig is the configuration before the file, the environment and
// the flags are applied.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	return Config{
		Server:   DefaultServer,
		Name:     host,
		DataDir:  DefaultDataDir(),
		Executor: "auto",
	}
}

// DefaultDataDir is ~/.dstack-runner.
func DefaultDataDir() string {
	home, err := os.UserHomeDir()
	if err != nil {
		return ".dstack-runner"
	}
	return filepath.Join(home, ".dstack-runner")
}

// DefaultWorkDir is the work directory of a runner whose data is in
// dataDir: its sibling with "-work" added, ~/.dstack-runner-work by
// default.
func DefaultWorkDir(dataDir string) string {
	return filepath.Clean(dataDir) + "-work"
}

// workDir is WorkDir, or its default.
func (c Config) workDir() string {
	if c.WorkDir != "" {
		return c.WorkDir
	}
	return DefaultWorkDir(c.DataDir)
}

// DefaultConfigPath is ~/.dstack-runner/config.yaml.
func DefaultConfigPath() string { return filepath.Join(DefaultDataDir(), "config.yaml") }

// LoadFile applies the config file at path over c. A missing file is an
// error that says how to create it.
func (c *Config) LoadFile(path string) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("no runner config at %s: run `dstack-runner config --token TOKEN` first (the token is in the web UI's Settings)", path)
	}
	if err != nil {
		return fmt.Errorf("read runner config: %w", err)
	}
	var f Config
	if err := yaml.Unmarshal(b, &f); err != nil {
		return fmt.Errorf("runner config %s is not valid YAML: %w (fix it or rewrite it with `dstack-runner config`)", path, err)
	}
	if f.Server != "" {
		c.Server = f.Server
	}
	if f.Token != "" {
		c.Token = f.Token
	}
	if f.JoinToken != "" {
		c.JoinToken = f.JoinToken
	}
	if f.Name != "" {
		c.Name = f.Name
	}
	if f.Shared {
		c.Shared = true
	}
	if f.DataDir != "" {
		c.DataDir = f.DataDir
	}
	if f.WorkDir != "" {
		c.WorkDir = f.WorkDir
	}
	if f.Executor != "" {
		c.Executor = f.Executor
	}
	if f.BashImage != "" {
		c.BashImage = f.BashImage
	}
	return nil
}

// WriteFile writes the file fields of c to path (mode 0600: it holds a
// token), creating its directory.
func (c Config) WriteFile(path string) error {
	b, err := yaml.Marshal(c)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("write runner config: %w", err)
	}
	return writeFileAtomic(path, b, 0o600, true)
}

// ApplyEnv applies DSTACK_SERVER, DSTACK_TOKEN, DSTACK_JOIN_TOKEN,
// DSTACK_WATCH_SPOT_INTERRUPTION and DSTACK_IMDS_ENDPOINT over c; a value it
// cannot read is reported by Validate.
func (c *Config) ApplyEnv(getenv func(string) string) {
	if v := getenv(EnvServer); v != "" {
		c.Server = v
	}
	if v := getenv(EnvToken); v != "" {
		c.Token = v
	}
	if v := getenv(EnvJoinToken); v != "" {
		c.JoinToken = v
	}
	if v := getenv(EnvWatchSpot); v != "" {
		switch strings.ToLower(strings.TrimSpace(v)) {
		case "1", "true", "yes", "on":
			c.WatchSpotInterruption = true
		case "0", "false", "no", "off":
			c.WatchSpotInterruption = false
		default:
			c.envErrs = append(c.envErrs, fmt.Errorf("%s=%q: set it to 1 to watch for spot interruptions, or 0", EnvWatchSpot, v))
		}
	}
	if v := getenv(EnvIMDSEndpoint); v != "" {
		c.IMDSEndpoint = v
	}
}

// Validate says what is wrong with c, and how to fix it.
func (c Config) Validate() error {
	errs := append([]error(nil), c.envErrs...)
	if err := ValidateServerURL(c.Server); err != nil {
		errs = append(errs, err)
	}
	token, join := strings.TrimSpace(c.Token) != "", strings.TrimSpace(c.JoinToken) != ""
	switch {
	case !token && !join:
		errs = append(errs, errors.New("no token: run `dstack-runner config --token TOKEN` (the token is in the web UI's Settings) or set "+EnvToken))
	case token && join:
		errs = append(errs, errors.New("both a user token and a join token are set: a self-hosted runner uses the token, an on-demand instance's runner only its join token (--join-token or "+EnvJoinToken+"); remove one"))
	}
	if err := api.CheckRunnerName(strings.TrimSpace(c.Name)); err != nil {
		errs = append(errs, fmt.Errorf("%w (set it with --name)", err))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("no data directory: set it with --data-dir"))
	} else if err := ValidateWorkDir(c.DataDir, c.workDir()); err != nil {
		errs = append(errs, err)
	}
	if c.ExecutorImpl == nil {
		if err := executor.CheckName(c.Executor); err != nil {
			errs = append(errs, fmt.Errorf("%w (set it with --executor)", err))
		}
	}
	if strings.ContainsAny(c.BashImage, " \t\n") {
		errs = append(errs, fmt.Errorf("bash image %q is not a Docker image name; give one such as ubuntu:24.04 (--bash-image)", c.BashImage))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"claim wait", c.ClaimWait}, {"stop grace", c.StopGrace}, {"log ack timeout", c.LogAckTimeout}, {"shutdown timeout", c.ShutdownTimeout},
		{"spot poll interval", c.SpotPollInterval}, {"spot upload margin", c.SpotUploadMargin}} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("%s %s is negative", d.name, d.v))
		}
	}
	if c.IMDSEndpoint != "" {
		if p, err := url.Parse(c.IMDSEndpoint); err != nil || p.Host == "" || (p.Scheme != "http" && p.Scheme != "https") {
			errs = append(errs, fmt.Errorf("instance metadata endpoint %q is not an http URL such as %s (--imds-endpoint or %s)", c.IMDSEndpoint, DefaultIMDSEndpoint, EnvIMDSEndpoint))
		}
	}
	return errors.Join(errs...)
}

// ValidateWorkDir refuses a work directory that is the data directory, is
// inside it or holds it: a job could then name the runner's own files. An
// empty work is the default, DefaultWorkDir(data).
func ValidateWorkDir(data, work string) error {
	if work == "" {
		work = DefaultWorkDir(data)
	}
	d, w := realPath(data), realPath(work)
	if d == "" || w == "" {
		return nil
	}
	if within(w, d) || within(d, w) {
		return fmt.Errorf("work directory %s and data directory %s overlap: a job could reach the runner's credential; give --work-dir a directory apart from --data-dir (default %s)", work, data, DefaultWorkDir(data))
	}
	return nil
}

// realPath is p absolute, with the links of its longest existing part
// resolved; "" when it cannot be made absolute.
func realPath(p string) string {
	abs, err := filepath.Abs(p)
	if err != nil {
		return ""
	}
	var rest []string
	for dir := abs; ; dir = filepath.Dir(dir) {
		if real, err := filepath.EvalSymlinks(dir); err == nil {
			return filepath.Join(append([]string{real}, rest...)...)
		}
		if dir == filepath.Dir(dir) {
			return abs
		}
		rest = append([]string{filepath.Base(dir)}, rest...)
	}
}

// within reports whether p is dir or inside it.
func within(p, dir string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// ValidateServerURL checks that u is an absolute http(s) URL, or several
// comma-separated: the addresses of one server's replicas, which the
// runner tries in turn when one cannot be reached.
func ValidateServerURL(u string) error {
	for _, one := range strings.Split(u, ",") {
		one = strings.TrimSpace(one)
		p, err := url.Parse(one)
		if err != nil || p.Host == "" || (p.Scheme != "http" && p.Scheme != "https") {
			if strings.Contains(u, ",") {
				return fmt.Errorf("server URL %q in %q is not an http(s) URL such as %s: give one URL, or several separated by commas, with --server", one, u, DefaultServer)
			}
			return fmt.Errorf("server URL %q is not an http(s) URL such as %s: set it with --server", u, DefaultServer)
		}
		if p.RawQuery != "" || p.Fragment != "" {
			return fmt.Errorf("server URL %q must not have a query or fragment", one)
		}
	}
	return nil
}

func (c *Config) applyDefaults() {
	if c.ClaimWait == 0 {
		c.ClaimWait = 30 * time.Second
	}
	if c.StopGrace == 0 {
		c.StopGrace = 2 * time.Second
	}
	if c.LogAckTimeout == 0 {
		c.LogAckTimeout = 30 * time.Second
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 60 * time.Second
	}
	if c.SpotPollInterval == 0 {
		c.SpotPollInterval = 2 * time.Second
	}
	if c.SpotUploadMargin == 0 {
		c.SpotUploadMargin = 20 * time.Second
	}
	if c.CheckpointSettle == 0 {
		c.CheckpointSettle = time.Second
	}
	if c.Version == "" {
		c.Version = version.Version
	}
	if c.Executor == "" {
		c.Executor = "shell"
	}
	c.WorkDir = c.workDir()
}

// writeFileAtomic writes b to path through a temporary file and a rename, so
// a crash leaves the old file or the new one; with sync, the new one is on
// disk when it returns.
func writeFileAtomic(path string, b []byte, mode os.FileMode, sync bool) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if sync {
		if err := tmp.Sync(); err != nil {
			tmp.Close()
			return err
		}
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
