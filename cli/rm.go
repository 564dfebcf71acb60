package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/dstackai/dstack/internal/bytesize"
)

func (e *Env) rmCmd() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "rm RUN... [-f]",
		Short: "Delete finished runs with their logs, artifacts and code",
		Long: `Delete finished runs with their logs, artifacts and code archive (the code
only when no other run of yours uses it), freeing the server's storage.

A run still running or pending is refused: stop it first with ` + "`dstack stop`" + `. A
tagged run is refused unless -f is given; then its tags are deleted too. An
admin may delete any user's run. Each run is deleted on its own: one refused
does not keep the others, and the exit code is 1 when any was refused.`,
		Example: `  dstack rm swift-otter-42
  dstack rm brave-fox-7 calm-owl-3 -f`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef("missing RUN: %s", cmd.UseLine())
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.rm(cmd.Context(), args, force)
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "also delete tagged runs, and their tags")
	return cmd
}

func (e *Env) rm(ctx context.Context, names []string, force bool) error {
	c, err := e.client()
	if err != nil {
		return err
	}
	failed := 0
	for _, name := range names {
		res, err := c.RunDelete(ctx, name, force)
		if err != nil {
			fmt.Fprintf(e.Stderr, "Error: %s\n", c.runErr(name, err))
			failed++
			continue
		}
		fmt.Fprintf(e.Stdout, "RUN %s deleted (%s freed)\n", res.Name, bytesize.Format(res.FreedBytes))
	}
	if failed > 0 {
		return &exitError{code: ExitError}
	}
	return nil
}
