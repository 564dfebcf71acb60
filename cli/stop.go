package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
)

func (e *Env) stopCmd() *cobra.Command {
	var abort bool
	cmd := &cobra.Command{
		Use:   "stop RUN [--abort]",
		Short: "Stop a run",
		Long: `Stop a run's unfinished jobs. A stopped job uploads its artifacts first;
with --abort it does not.`,
		Args: exactArgs("RUN"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.stop(cmd.Context(), args[0], abort)
		},
	}
	cmd.Flags().BoolVar(&abort, "abort", false, "stop without uploading artifacts")
	return cmd
}

func (e *Env) stop(ctx context.Context, name string, abort bool) error {
	c, err := e.client()
	if err != nil {
		return err
	}
	run, err := c.RunStop(ctx, name, abort)
	if err != nil {
		return c.runErr(name, err)
	}
	switch {
	case run.Status.Finished():
		fmt.Fprintf(e.Stdout, "RUN %s %s\n", run.Name, run.Status)
	case abort:
		fmt.Fprintf(e.Stdout, "RUN %s aborting\n", run.Name)
	default:
		fmt.Fprintf(e.Stdout, "RUN %s stopping (its artifacts are being uploaded)\n", run.Name)
	}
	if !run.Status.Finished() {
		fmt.Fprintln(e.Stderr, "`dstack ps` shows when it has ended.")
	}
	return nil
}
