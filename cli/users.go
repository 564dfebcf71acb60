package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/internal/bytesize"
)

// Users (admins manage them) and tokens (each user their own).

func (e *Env) usersCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "users [list] [--json]",
		Short: "Manage the server's users (admins)",
		Long: `Manage the users of the server; admins only.

An admin manages users, the AWS account, limits, the on-demand switch and
every runner, and reads and stops every run. A member runs workflows and
manages their own runs, tokens and self-hosted runners, and reads limits and
the on-demand status. A user's name is 1 to 64 characters of a-z, 0-9, '.',
'_' and '-'.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return e.usersList(cmd.Context(), asJSON)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON array of users")
	cmd.AddCommand(e.usersListCmd(), e.usersAddCmd(), e.usersSetCmd(), e.usersRmCmd())
	return cmd
}

func (e *Env) usersListCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list [--json]",
		Short: "List users: name, role, created, last seen, running jobs, storage used",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return e.usersList(cmd.Context(), asJSON)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON array of users")
	return cmd
}

func (e *Env) usersAddCmd() *cobra.Command {
	var admin bool
	cmd := &cobra.Command{
		Use:   "add NAME [--admin]",
		Short: "Add a user and print its token (shown once)",
		Long: `Add a user, a member unless --admin, and print its first token (named
default) on stdout: it is shown this once. Give it to the user, who runs
` + "`dstack config --server URL --token TOKEN`" + `.`,
		Example: `  dstack users add alice
  dstack users add bob --admin`,
		Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := api.CheckAccountName("user", args[0]); err != nil {
				return usagef("%v", err)
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			res, err := c.UserCreate(cmd.Context(), api.UserCreateRequest{Name: args[0], Admin: admin})
			if err != nil {
				return c.explain(err)
			}
			fmt.Fprintf(e.Stderr, "Added %s %s. Its token, shown once (dstack config --server %s --token TOKEN):\n", role(res.User.Admin), res.User.Name, c.BaseURL())
			fmt.Fprintln(e.Stdout, res.Token)
			return nil
		},
	}
	cmd.Flags().BoolVar(&admin, "admin", false, "make the user an admin (default: a member)")
	return cmd
}

func (e *Env) usersSetCmd() *cobra.Command {
	var (
		admin, member bool
		maxRunning    int
		quota         string
	)
	cmd := &cobra.Command{
		Use:   "set NAME [--admin|--member] [--max-running N] [--storage-quota SIZE]",
		Short: "Change a user's role, cap of running jobs or storage quota",
		Long: `Change a user: make them an admin or a member (the last admin cannot be made
a member), cap how many of their jobs run at once (--max-running N; 0 lifts
the cap), or set their storage quota for code, logs and artifacts
(--storage-quota 50GiB; 0 for none; "default" for the server's
--storage-quota).`,
		Example: `  dstack users set alice --admin
  dstack users set bob --member --max-running 4
  dstack users set bob --storage-quota 50GiB
  dstack users set bob --storage-quota default`,
		Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var req api.UserPatchRequest
			switch {
			case admin && member:
				return usagef("give one of --admin and --member, not both: %s", cmd.UseLine())
			case admin || member:
				req.Admin = &admin
			}
			if cmd.Flags().Changed("max-running") {
				if maxRunning < 0 {
					return usagef("--max-running %d: give 0 (no cap) or more running jobs", maxRunning)
				}
				req.MaxRunning = &maxRunning
			}
			if cmd.Flags().Changed("storage-quota") {
				if strings.EqualFold(strings.TrimSpace(quota), "default") {
					req.StorageQuotaDefault = true
				} else {
					n, err := bytesize.Parse(quota)
					if err != nil {
						return usagef("--storage-quota %q: %v (a size such as 50GiB, 0 for none, or default)", quota, err)
					}
					req.StorageQuota = &n
				}
			}
			if req.Admin == nil && req.MaxRunning == nil && req.StorageQuota == nil && !req.StorageQuotaDefault {
				return usagef("nothing to change: give --admin, --member, --max-running or --storage-quota: %s", cmd.UseLine())
			}
			if err := api.CheckAccountName("user", args[0]); err != nil {
				return usagef("%v", err)
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			u, err := c.UserPatch(cmd.Context(), args[0], req)
			if err != nil {
				return c.explain(err)
			}
			line := fmt.Sprintf("%s is %s %s", u.Name, article(u.Admin), role(u.Admin))
			if req.MaxRunning != nil {
				line += "; running jobs: " + maxRunningText(u.MaxRunning)
			}
			if req.StorageQuota != nil || req.StorageQuotaDefault {
				line += "; storage: " + storageText(*u)
			}
			fmt.Fprintln(e.Stdout, line)
			return nil
		},
	}
	cmd.Flags().BoolVar(&admin, "admin", false, "make the user an admin")
	cmd.Flags().BoolVar(&member, "member", false, "make the user a member")
	cmd.Flags().IntVar(&maxRunning, "max-running", 0, "cap the user's running jobs at N (0: no cap)")
	cmd.Flags().StringVar(&quota, "storage-quota", "", `the user's storage quota: a size such as 50GiB, 0 for none, or "default" for the server's`)
	return cmd
}

// maxRunningText says a user's cap of running jobs.
func maxRunningText(n int) string {
	if n == 0 {
		return "no cap"
	}
	return fmt.Sprintf("at most %d", n)
}

// storageText says what storage a user takes against their quota.
func storageText(u api.UserInfo) string {
	quota, whose := u.StorageQuotaDefault, " (server default)"
	if u.StorageQuota != nil {
		quota, whose = *u.StorageQuota, ""
	}
	if quota == 0 {
		return bytesize.Format(u.StorageUsed) + " used, no quota" + whose
	}
	return fmt.Sprintf("%s used of %s%s", bytesize.Format(u.StorageUsed), bytesize.Format(quota), whose)
}

func (e *Env) usersRmCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rm NAME",
		Short: "Remove a user",
		Long: `Remove a user: their tokens, web sessions and self-hosted runners stop working
at once; their runs stay, for admins to read. The name stays taken. The last
admin cannot be removed.`,
		Example: "  dstack users rm alice",
		Args:    exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := api.CheckAccountName("user", args[0]); err != nil {
				return usagef("%v", err)
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			u, err := c.UserDelete(cmd.Context(), args[0])
			if err != nil {
				return c.explain(err)
			}
			fmt.Fprintf(e.Stdout, "Removed user %s\n", u.Name)
			return nil
		},
	}
	return cmd
}

func role(admin bool) string {
	if admin {
		return "admin"
	}
	return "member"
}

func article(admin bool) string {
	if admin {
		return "an"
	}
	return "a"
}

func (e *Env) usersList(ctx context.Context, asJSON bool) error {
	c, err := e.client()
	if err != nil {
		return err
	}
	us, err := c.UserList(ctx)
	if err != nil {
		return c.explain(err)
	}
	if asJSON {
		return writeJSON(e.Stdout, us)
	}
	t := newTable(e.Stdout, "name", "role", "created", "last seen", "running jobs", "storage")
	now := e.Now()
	for _, u := range us {
		seen := "never"
		if u.LastSeenAt != nil {
			seen = formatAgo(now, *u.LastSeenAt)
		}
		running := fmt.Sprint(u.RunningJobs)
		if u.MaxRunning > 0 {
			running += fmt.Sprintf(" of %d", u.MaxRunning)
		}
		t.row(u.Name, role(u.Admin), formatAgo(now, u.CreatedAt), seen, running, storageText(u))
	}
	return t.flush()
}

func (e *Env) tokensCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "tokens [list] [--json]",
		Short: "Manage your tokens",
		Long: `Manage your tokens: each one signs in the CLI, a runner's registration or the
web UI, until it expires or is revoked. Their values are shown only when
they are created.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return e.tokensList(cmd.Context(), asJSON)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON array of tokens")
	cmd.AddCommand(e.tokensListCmd(), e.tokensCreateCmd(), e.tokensRevokeCmd())
	return cmd
}

func (e *Env) tokensListCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list [--json]",
		Short: "List your tokens: name, created, last used, expires (never the value)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return e.tokensList(cmd.Context(), asJSON)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON array of tokens")
	return cmd
}

func (e *Env) tokensCreateCmd() *cobra.Command {
	var name, expires string
	cmd := &cobra.Command{
		Use:   "create [--name N] [--expires 30d]",
		Short: "Create a token and print it (shown once)",
		Long: `Create a token and print it on stdout: it is shown this once. Without --name
it is named token-YYYYMMDD-HHMMSS; with --expires (days such as 30d, or a
duration such as 12h) it stops working after that.`,
		Example: `  dstack tokens create --name ci --expires 30d`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if name != "" {
				if err := api.CheckAccountName("token", name); err != nil {
					return usagef("--name: %v", err)
				}
			}
			if expires != "" {
				if _, err := api.ParseExpiry(expires); err != nil {
					return usagef("--expires: %v", err)
				}
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			t, err := c.TokenCreate(cmd.Context(), api.TokenCreateRequest{Name: name, ExpiresIn: expires})
			if err != nil {
				return c.explain(err)
			}
			until := "it does not expire"
			if t.ExpiresAt != nil {
				until = "it expires at " + t.ExpiresAt.UTC().Format(time.RFC3339)
			}
			fmt.Fprintf(e.Stderr, "Created token %s (%s), shown once:\n", t.Name, until)
			fmt.Fprintln(e.Stdout, t.Token)
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "the token's name: a-z, 0-9, '.', '_' and '-' (default: token-YYYYMMDD-HHMMSS)")
	cmd.Flags().StringVar(&expires, "expires", "", "how long the token works: days (30d) or a duration (12h) (default: never expires)")
	return cmd
}

func (e *Env) tokensRevokeCmd() *cobra.Command {
	var runners bool
	cmd := &cobra.Command{
		Use:   "revoke NAME|ID [--runners]",
		Short: "Revoke a token, ending the web sessions made with it",
		Long: `Revoke one of your tokens, by name or ID: it stops working at once, and so do
the web sessions made with it. With --runners, the runners registered with
it are revoked too.`,
		Example: `  dstack tokens revoke ci
  dstack tokens revoke laptop --runners`,
		Args: exactArgs("NAME or ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			res, err := c.TokenRevoke(cmd.Context(), args[0], runners)
			if err != nil {
				return c.explain(err)
			}
			fmt.Fprintf(e.Stdout, "Revoked token %s (%s)\n", res.Token.Name, res.Token.ID)
			for _, r := range res.Runners {
				fmt.Fprintf(e.Stdout, "Revoked runner %s\n", r)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&runners, "runners", false, "also revoke the runners registered with the token")
	return cmd
}

func (e *Env) tokensList(ctx context.Context, asJSON bool) error {
	c, err := e.client()
	if err != nil {
		return err
	}
	ts, err := c.TokenList(ctx)
	if err != nil {
		return c.explain(err)
	}
	if asJSON {
		return writeJSON(e.Stdout, ts)
	}
	t := newTable(e.Stdout, "name", "id", "created", "last used", "expires")
	now := e.Now()
	for _, tk := range ts {
		used, exp := "never", "never"
		if tk.LastUsedAt != nil {
			used = formatAgo(now, *tk.LastUsedAt)
		}
		if tk.ExpiresAt != nil {
			exp = tk.ExpiresAt.Local().Format("2006-01-02 15:04")
		}
		name := tk.Name
		if tk.Current {
			name += " (this one)"
		}
		t.row(name, tk.ID, formatAgo(now, tk.CreatedAt), used, exp)
	}
	return t.flush()
}
