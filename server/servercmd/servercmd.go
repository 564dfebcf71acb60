// Package servercmd is the `dstack server` command: it starts the control
// plane in the foreground until interrupted.
package servercmd

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	neturl "net/url"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/dstackai/dstack/internal/bytesize"
	"github.com/dstackai/dstack/internal/secretbox"
	"github.com/dstackai/dstack/server"
	"github.com/dstackai/dstack/userconfig"
)

// envFlags are the environment variables that set a flag of `dstack
// server` (or of its subcommands) when the flag is not given.
var envFlags = []struct{ name, flag string }{
	{"DSTACK_SERVER_DB", "db"},
	{"DSTACK_SERVER_DATA_DIR", "data-dir"},
	{"DSTACK_SERVER_LOG_STORE", "log-store"},
	{"DSTACK_SERVER_ARTIFACTS", "artifacts"},
	{"DSTACK_SERVER_S3_ENDPOINT", "s3-endpoint"},
	{"DSTACK_SERVER_S3_REGION", "s3-region"},
	{"DSTACK_AWS_ENDPOINT_URL", "aws-endpoint-url"},
	{"DSTACK_K8S_SCHEDULE_TIMEOUT", "k8s-schedule-timeout"},
	{"DSTACK_SERVER_STORAGE_QUOTA", "storage-quota"},
	{"DSTACK_SERVER_RETENTION", "retention"},
}

// envHelp is the help's list of the environment variables the server reads.
func envHelp() string {
	var b strings.Builder
	b.WriteString("\n\nEnvironment variables (a flag given wins over its variable):\n")
	for _, e := range envFlags {
		fmt.Fprintf(&b, "  %-30s --%s\n", e.name, e.flag)
	}
	fmt.Fprintf(&b, "  %-30s the server key (32 bytes in base64); default: %s in --data-dir\n", secretbox.EnvKey, secretbox.KeyFile)
	fmt.Fprintf(&b, "  %-30s the CLI config written on first start (default ~/.dstack/config.yaml)", userconfig.EnvVar)
	return b.String()
}

// Command returns `dstack server`. getenv reads the environment (os.Getenv
// when nil): the CLI passes its Env's, so that tests drive it.
func Command(getenv func(string) string) *cobra.Command {
	if getenv == nil {
		getenv = os.Getenv
	}
	cfg := server.Defaults
	cfg.Getenv = getenv
	var logLevel, logFormat string
	var noConfig bool
	var minFree string
	lo := localOptions{mode: "auto", network: "bridge"}
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Start the dstack server (API, scheduler and autoscaler)",
		Long: `Start the dstack server in the foreground.

On first start it creates the admin user and prints the admin token once; if
the CLI has no server configured yet, it writes the URL and token to
~/.dstack/config.yaml so that dstack commands work at once.

State lives in --data-dir (SQLite, logs, artifacts), or in PostgreSQL with
--db postgres://user:password@host:5432/dbname.

Artifacts and code archives go to an S3 bucket with --artifacts
s3://bucket/prefix (replicas sharing a PostgreSQL database then share them
too); --s3-endpoint http://host:9000 points at an S3-compatible store (MinIO,
Ceph, R2...), addressed path-style, and --s3-region sets the bucket's region.
The credentials come from the AWS default chain: AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY, ~/.aws/credentials and ~/.aws/config (AWS_PROFILE),
SSO, or an instance or task role; they are never printed or logged. They need
s3:ListBucket, s3:GetObject, s3:PutObject and s3:AbortMultipartUpload. The
server checks the bucket at start and refuses to start when it cannot use it.
Runners never see the credentials: they upload and download through the
server.

On-demand runners: with the local backend (--local-backend, on by default
when the Docker engine answers and dstack-runner sits next to dstack), jobs
no runner can take launch Docker containers running dstack-runner, within
the users' limits; idle ones go after --idle-timeout. The containers reach
the server through the Docker bridge's gateway: on a loopback --host (the
default) the server also listens on the gateway's address for them;
otherwise give --host 0.0.0.0 (or the gateway's address), or --external-url.

On AWS: ` + "`dstack aws config`" + ` gives the server the credentials of an AWS account
while it runs; they are checked against EC2, then kept in the database
encrypted under the server key: DSTACK_SERVER_ENCRYPTION_KEY (32 bytes in
base64, ` + "`head -c 32 /dev/urandom | base64`" + `), or else the key file
encryption.key that the first start writes in --data-dir. Replicas sharing
a PostgreSQL database need the same key; a server started with another key
than the credentials were saved with starts without AWS and says so.
--aws-endpoint-url points EC2 calls at an EC2-compatible endpoint; the
artifact bucket of ` + "`dstack aws config`" + ` is reached through --s3-endpoint when
given.` + envHelp(),
		Args: cobra.NoArgs,

		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := newLogger(cmd.ErrOrStderr(), logLevel, logFormat)
			if err != nil {
				return err
			}
			if cfg.MinFreeSpace, err = parseMinFreeSpace(minFree); err != nil {
				return err
			}
			cfg.Logger = logger
			tuneGC()
			if err := checkExternalURL(cfg.ExternalURL); err != nil {
				return err
			}
			cfg.RunnerBinaries = server.RunnerBinariesAt(cmp.Or(lo.runnerBinary, defaultRunnerBinary()))
			b, gw, err := localBackend(cmd.Context(), logger.With("subsystem", "backend/local"), lo)
			if err != nil {
				return err
			}
			if b != nil {
				cfg.Backends = append(cfg.Backends, b)
				cfg.AlsoListen = append(cfg.AlsoListen, gatewayHosts(cfg.Host, gw, cfg.ExternalURL, lo.network)...)
			}
			cliConfig := ""
			if !noConfig {
				if cliConfig, err = userconfig.PathFromEnv(getenv); err != nil {
					logger.Warn("the CLI's config will not be written", "err", err)
				}
			}
			return run(cmd.Context(), cmd.OutOrStdout(), cfg, cliConfig)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Host, "host", cfg.Host, "address to listen on")
	f.IntVar(&cfg.Port, "port", cfg.Port, "port to listen on")
	f.StringVar(&cfg.DataDir, "data-dir", "", "where state, logs and artifacts live (default ~/.dstack/server)")
	f.StringVar(&cfg.DB, "db", "", "PostgreSQL URL (default: SQLite in --data-dir)")
	f.StringVar(&cfg.LogStore, "log-store", "", "where jobs' logs live: files (in --data-dir, on the replica the runner talks to) or database (every replica serves them) (default: database with --db, else files)")
	f.StringVar(&cfg.Artifacts, "artifacts", "", "keep artifacts and code archives in an S3 bucket, s3://bucket/prefix, with credentials from the AWS default chain (default: in --data-dir)")
	f.StringVar(&cfg.S3Endpoint, "s3-endpoint", "", "`URL` of an S3-compatible store for --artifacts and the artifact bucket of 'dstack aws config', such as http://localhost:9000; path-style (default: AWS S3)")
	f.StringVar(&cfg.S3Region, "s3-region", "", "region of the --artifacts bucket (default: AWS_REGION or the shared config; else us-east-1 with --s3-endpoint, or the bucket's own)")
	f.DurationVar(&cfg.HeartbeatTimeout, "heartbeat-timeout", cfg.HeartbeatTimeout, "a runner silent this long is offline and its job requeued")
	f.IntVar(&cfg.MaxAttempts, "max-attempts", cfg.MaxAttempts, "how many times an interrupted job is run")
	f.Var(bytesize.Value{P: &cfg.MaxCodeSize}, "max-code-size", "largest code archive accepted: bytes, or a size such as 400MB or 1GiB, read as dstack run reads it")
	f.StringVar(&minFree, "min-free-space", "", "free disk space in --data-dir (and its logs) below which new runs and code uploads are refused with 507, so running jobs keep room for their logs, such as 2GiB; 0 turns it off (default: 1 GiB or 5 % of the file system, whichever is smaller)")
	f.StringVar(&cfg.TLSCert, "tls-cert", "", "TLS certificate file (serves HTTPS)")
	f.StringVar(&cfg.TLSKey, "tls-key", "", "TLS key file")
	f.DurationVar(&cfg.IdleTimeout, "idle-timeout", cfg.IdleTimeout, "an on-demand instance idle this long is terminated")
	f.StringVar(&cfg.ExternalURL, "external-url", "", "URL the server is reached at: by runners on on-demand instances, and by browsers through a reverse proxy (default: where it listens; the local backend rewrites a loopback host to the Docker gateway)")
	f.StringVar(&lo.mode, "local-backend", lo.mode, "on-demand instances as local Docker containers: auto (on when the Docker engine answers and dstack-runner is found), on or off; on a loopback --host the server also listens on the Docker gateway for its containers")
	f.StringVar(&lo.runnerBinary, "runner-binary", "", "static dstack-runner binary for the local backend's image and the installer at /runner, which also gives out dstack-runner-linux-ARCH beside it (default: next to dstack)")
	f.StringVar(&lo.network, "docker-network", lo.network, "Docker network of the local backend's containers")
	f.StringVar(&cfg.AWS.Endpoint, "aws-endpoint-url", "", "URL of an EC2-compatible endpoint for the AWS backend, such as http://localhost:4566 (default: AWS's own)")
	f.DurationVar(&cfg.Kubernetes.ScheduleTimeout, "k8s-schedule-timeout", 5*time.Minute, "a Kubernetes runner Pod no node has taken this long is a launch refused for capacity: the next allowed offer is tried (sooner when the scheduler says no node can ever take it)")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&logFormat, "log-format", "text", "text or json")
	f.BoolVar(&noConfig, "no-cli-config", false, "do not write ~/.dstack/config.yaml on first start")
	f.Var(quotaValue{&cfg.StorageQuota}, "storage-quota", "storage quota of each user without one of their own (dstack users set --storage-quota): code, logs and artifacts of their runs, such as 50GiB; an upload or run over it is refused with 507; 0 is none")
	f.Var(daysValue{&cfg.Retention}, "retention", "delete finished runs no tag names this long after they ended, with their logs, artifacts and code, such as 30d; 0 keeps them forever")
	f.Var(retentionValue{&cfg.RunnerRetention}, "runner-retention", "how long an offline self-hosted runner is listed before it is removed (a restarted runner registers anew); 0 keeps them forever")
	// The environment fills the flags not given, for the server and
	// `dstack server migrate` alike.
	cmd.PersistentPreRunE = func(*cobra.Command, []string) error { return applyEnv(f, getenv) }
	cmd.AddCommand(migrateCommand(), adminTokenCommand(getenv), backupCommand(getenv))
	return cmd
}

// serverGCPercent is the server's GOGC unless GOGC or GOMEMLIMIT is set.
// A server with many runners holds two connections per runner that mostly
// wait: their buffers are most of a live heap that changes slowly, and the
// default (the heap may double before a collection) would cost hundreds of
// MiB at 10,000 runners. Collecting less often saves CPU while jobs drain,
// but the heap grows to its goal in a minute: at 10,000 runners on
// PostgreSQL, 200 took the server from 464 to 732 MiB resident after a
// minute idle, and from 625 to 885 MiB at its peak in a drain (bench/scale
// -idle 60s).
const serverGCPercent = 50

func tuneGC() {
	if os.Getenv("GOGC") == "" && os.Getenv("GOMEMLIMIT") == "" {
		debug.SetGCPercent(serverGCPercent)
	}
}

// applyEnv sets the flags of envFlags not given on the command line from
// their environment variables.
func applyEnv(f *pflag.FlagSet, getenv func(string) string) error {
	for _, e := range envFlags {
		v := getenv(e.name)
		if v == "" || f.Changed(e.flag) {
			continue
		}
		if err := f.Set(e.flag, v); err != nil {
			return fmt.Errorf("%s: %w", e.name, err)
		}
	}
	return nil
}

// parseMinFreeSpace reads --min-free-space: "" is the server's default,
// "0" no watermark.
func parseMinFreeSpace(v string) (int64, error) {
	if strings.TrimSpace(v) == "" {
		return 0, nil
	}
	n, err := bytesize.Parse(v)
	if err != nil {
		return 0, fmt.Errorf("--min-free-space: %w (0 turns the watermark off)", err)
	}
	if n == 0 {
		return -1, nil
	}
	return n, nil
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: use text or json", format)
}

func run(ctx context.Context, out io.Writer, cfg server.Config, cliConfig string) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	srv, err := start(ctx, out, cfg, cliConfig)
	if err != nil {
		return err
	}
	<-ctx.Done()
	fmt.Fprintln(out, "Stopping the dstack server...")
	return srv.Stop()
}

// start starts the server and says where it is; on first start it prints
// the admin token and, when cliConfig is a path, writes both into that CLI
// config unless it names a server already.
func start(ctx context.Context, out io.Writer, cfg server.Config, cliConfig string) (*server.Server, error) {
	srv, err := server.New(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if err := srv.Start(ctx); err != nil {
		_ = srv.Stop()
		return nil, err
	}
	url := clientURL(srv.URL(), cfg.ExternalURL)
	fmt.Fprintf(out, "The dstack server is running at %s\n", url)
	if tok := srv.AdminToken(); tok != "" {
		fmt.Fprintf(out, "The admin token is %s\n", tok)
		fmt.Fprintln(out, "  (shown once: it is stored hashed; keep it)")
		if cliConfig != "" && configureCLI(cliConfig, url, tok) {
			fmt.Fprintf(out, "The CLI is configured to use this server (%s)\n", cliConfig)
		}
		fmt.Fprintf(out, "To add a runner: curl -fsSL %s/runner | sudo sh, then dstack-runner config --server %s --token %s && dstack-runner start\n", url, url, tok)
	}
	return srv, nil
}

// clientURL is the URL to print and to give the CLI: the external URL when
// there is one; else where the server listens, an address of every
// interface (--host 0.0.0.0 or ::, which a client cannot dial as such)
// replaced by the loopback address.
func clientURL(listen, external string) string {
	if external != "" {
		return strings.TrimRight(external, "/")
	}
	u, err := neturl.Parse(listen)
	if err != nil {
		return listen
	}
	if ip := net.ParseIP(u.Hostname()); ip != nil && ip.IsUnspecified() {
		u.Host = net.JoinHostPort("127.0.0.1", u.Port())
	}
	return u.String()
}

// checkExternalURL refuses an --external-url that clients could not use.
func checkExternalURL(raw string) error {
	if raw == "" {
		return nil
	}
	u, err := neturl.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("--external-url %q: give the URL clients and runners reach the server at, http:// or https:// with a host, such as https://dstack.example.com", raw)
	}
	return nil
}

// configureCLI writes the CLI's config at path when it names no server yet.
func configureCLI(path, url, token string) bool {
	c, err := userconfig.Load(path)
	if err != nil || strings.TrimSpace(c.Server) != "" {
		return false
	}
	c.Server, c.Token = url, token
	return userconfig.Save(path, c) == nil
}

func adminTokenCommand(getenv func(string) string) *cobra.Command {
	var reset bool
	var cfg server.Config
	cmd := &cobra.Command{
		Use:   "admin-token --reset [--data-dir D | --db URL]",
		Short: "Print a new admin token, revoking the admin's old ones",
		Long: `Recover a lost admin token. Run it on the server's machine, with access to
its state: --data-dir (SQLite, as the server was given) or --db (PostgreSQL);
it works while the server runs. It prints a new token for the first admin
(or, when no admin is left, for the user admin, made an admin or added) and
revokes that admin's other tokens, which ends their web sessions. Tokens are
stored hashed: the old one cannot be shown.`,
		Example: `  dstack server admin-token --reset --data-dir /var/lib/dstack
  dstack server admin-token --reset --db postgres://dstack@db:5432/dstack`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !reset {
				return fmt.Errorf("tokens are stored hashed and cannot be shown again: give --reset to print a new admin token (the admin's old tokens are revoked)")
			}
			if cfg.DataDir != "" && cfg.DB != "" {
				return fmt.Errorf("--data-dir and --db both given: give the one the server uses")
			}
			if cfg.DataDir == "" && cfg.DB == "" {
				cfg.DB = getenv("DSTACK_SERVER_DB")
				if cfg.DB == "" {
					cfg.DataDir = getenv("DSTACK_SERVER_DATA_DIR")
				}
			}
			cfg.Getenv = getenv
			res, err := server.ResetAdminToken(cmd.Context(), cfg)
			if res == nil {
				return err
			}
			// The new token is printed even when the reset could not be
			// audited: the old ones are revoked already.
			if res.Created {
				fmt.Fprintf(cmd.ErrOrStderr(), "No admin was left: %s is an admin now.\n", res.User)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "New token of admin %s (shown once; %d old token(s) revoked):\n", res.User, res.Revoked)
			fmt.Fprintln(cmd.OutOrStdout(), res.Token)
			return err
		},
	}
	f := cmd.Flags()
	f.BoolVar(&reset, "reset", false, "make a new admin token and revoke the admin's old ones")
	f.StringVar(&cfg.DataDir, "data-dir", "", "the server's data directory, with its SQLite state (default ~/.dstack/server)")
	f.StringVar(&cfg.DB, "db", "", "the server's PostgreSQL URL")
	return cmd
}

func migrateCommand() *cobra.Command {
	var dataDir, db string
	cmd := &cobra.Command{
		Use:   "migrate [--data-dir D | --db URL]",
		Short: "Apply database migrations and exit",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// Its own flags, else the server's (given before "migrate",
			// or set from the environment).
			parent := cmd.Parent().Flags()
			var cfg server.Config
			cfg.DataDir, _ = parent.GetString("data-dir")
			cfg.DB, _ = parent.GetString("db")
			if dataDir != "" || db != "" {
				cfg.DataDir, cfg.DB = dataDir, db
			}
			if err := server.Migrate(cmd.Context(), cfg); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "The database is up to date.")
			return nil
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "the server's data directory, with its SQLite state (default ~/.dstack/server)")
	cmd.Flags().StringVar(&db, "db", "", "the server's PostgreSQL URL")
	return cmd
}
