package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/dstackai/dstack/client"
	"github.com/dstackai/dstack/userconfig"
)

func (e *Env) configCmd() *cobra.Command {
	var server, token string
	var noCheck bool
	cmd := &cobra.Command{
		Use:   "config [--server URL] [--token TOKEN] [--no-check]",
		Short: "Set the dstack server and token this CLI uses",
		Long: `Set the dstack server and token this CLI uses, in ~/.dstack/config.yaml
(or the file DSTACK_CONFIG names). The token is checked against the server
before it is saved, unless --no-check.

Without flags, shows what is configured and where each value comes from.`,
		Example: "  dstack config --server http://127.0.0.1:3000 --token 3f2a...",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("server") && !cmd.Flags().Changed("token") {
				return e.configShow()
			}
			return e.configSet(cmd.Context(), server, token, cmd.Flags().Changed("server"), cmd.Flags().Changed("token"), noCheck)
		},
	}
	cmd.Flags().StringVar(&server, "server", "", "the server's URL, such as http://127.0.0.1:3000")
	cmd.Flags().StringVar(&token, "token", "", "your API `TOKEN` (printed by 'dstack server' on its first start)")
	cmd.Flags().BoolVar(&noCheck, "no-check", false, "save without checking the token against the server")
	return cmd
}

func (e *Env) configShow() error {
	s, err := e.settings()
	if err != nil {
		return err
	}
	out := e.Stdout
	fmt.Fprintf(out, "config file: %s\n", s.ConfigPath)
	if s.Server == "" {
		fmt.Fprintln(out, "server:      (none)")
	} else {
		fmt.Fprintf(out, "server:      %s (from %s)\n", s.Server, s.ServerSource)
	}
	if s.Token == "" {
		fmt.Fprintln(out, "token:       (none)")
	} else {
		fmt.Fprintf(out, "token:       %s (from %s)\n", maskToken(s.Token), s.TokenSource)
	}
	if s.Server == "" || s.Token == "" {
		fmt.Fprintln(out, "\nSet them with `dstack config --server URL --token TOKEN`.")
	}
	return nil
}

func (e *Env) configSet(ctx context.Context, server, token string, setServer, setToken, noCheck bool) error {
	path, err := e.configPath()
	if err != nil {
		return err
	}
	cfg, err := userconfig.Load(path)
	if err != nil {
		return err
	}
	if setServer {
		if server == "" {
			return usagef("--server needs a URL such as http://127.0.0.1:3000")
		}
		cfg.Server = server
	}
	if setToken {
		if token == "" {
			return usagef("--token needs the token `dstack server` printed on its first start")
		}
		cfg.Token = token
	}
	if cfg.Server == "" {
		return usagef("no server is configured yet: give one with --server URL")
	}
	c, err := client.New(cfg.Server, cfg.Token, e.ClientOptions...)
	if err != nil {
		return fmt.Errorf("%w: give another with --server", err)
	}
	if !noCheck {
		if cfg.Token == "" {
			return usagef("no token is configured yet: give one with --token TOKEN")
		}
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		u, err := c.Me(ctx)
		if err != nil {
			ac := &apiClient{Client: c, s: &settings{Server: cfg.Server, Token: cfg.Token, TokenSource: "--token"}}
			if !setToken {
				ac.s.TokenSource = path
			}
			return fmt.Errorf("%w\nNothing was saved; to save anyway, add --no-check", ac.explain(err))
		}
		if err := userconfig.Save(path, cfg); err != nil {
			return err
		}
		role := "user"
		if u.Admin {
			role = "admin"
		}
		fmt.Fprintf(e.Stdout, "Saved to %s: %s as %s (%s).\n", path, cfg.Server, u.Name, role)
	} else {
		if err := userconfig.Save(path, cfg); err != nil {
			return err
		}
		fmt.Fprintf(e.Stdout, "Saved to %s: %s (not checked).\n", path, cfg.Server)
	}
	if e.Getenv("DSTACK_SERVER") != "" || e.Getenv("DSTACK_TOKEN") != "" {
		fmt.Fprintln(e.Stderr, "Note: DSTACK_SERVER or DSTACK_TOKEN is set and wins over the config file.")
	}
	return nil
}

// maskToken shows a token's first four characters only.
func maskToken(t string) string {
	if len(t) <= 8 {
		return "****"
	}
	return t[:4] + "****"
}
