package cli

import (
	"fmt"
	"runtime"

	"github.com/spf13/cobra"

	"github.com/dstackai/dstack/client"
	"github.com/dstackai/dstack/version"
)

func (e *Env) versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the versions of this CLI and of the configured server",
		Long: `Print the version of this CLI and, when a server is configured, the server's
(GET /api/v1/version, which needs no token). ` + "`dstack -v`" + ` prints the CLI's only.
An error reaching the configured server makes the exit code 1.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintf(e.Stdout, "Client: %s (%s, %s/%s)\n", version.Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
			s, err := e.settings()
			if err != nil {
				return err
			}
			if s.Server == "" {
				fmt.Fprintln(e.Stdout, "Server: none configured (`dstack config --server URL` sets one)")
				return nil
			}
			// The version needs no token: ask even when none is set.
			c, err := client.New(s.Server, s.Token, e.ClientOptions...)
			if err != nil {
				return fmt.Errorf("%w (from %s): fix it with `dstack config --server URL`", err, s.ServerSource)
			}
			info, err := c.ServerInfo(cmd.Context())
			if err != nil {
				return fmt.Errorf("ask %s for its version: %w", s.Server, err)
			}
			fmt.Fprintf(e.Stdout, "Server: %s (%s)\n", info.Version, s.Server)
			if info.Version != version.Version {
				fmt.Fprintf(e.Stderr, "The server runs another version than this CLI: update the older of the two.\n")
			}
			return nil
		},
	}
}
