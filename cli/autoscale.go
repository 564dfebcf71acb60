package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/client"
)

// `dstack autoscale`: the older spelling of `dstack on-demand`, deprecated
// but still working. Its rules are spot limits in the default region:
// `allow TYPE --max N` sets one, `--max 0` removes it; `info` lists the
// limits, `clear` deletes them all.

// autoscaleDeprecated is what `dstack autoscale` says to use instead.
const autoscaleDeprecated = "use `dstack on-demand` instead: `dstack on-demand limit -i TYPE --spot -m MAX`, `dstack on-demand limits`, `dstack on-demand enable|disable`"

func (e *Env) autoscaleCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "autoscale COMMAND",
		Short: "Manage autoscale rules (the older spelling of `dstack on-demand`)",
		Args:  noArgs,
		// cobra hides the command from the help and says so when
		// `dstack autoscale` itself runs.
		Deprecated: autoscaleDeprecated,
	}
	// cobra says it only for the command itself; its subcommands say it on
	// stderr, so that their output (--json) stays as it was.
	cmd.PersistentPreRun = func(c *cobra.Command, _ []string) {
		if c != cmd {
			fmt.Fprintf(e.Stderr, "Command %q is deprecated, %s\n", cmd.Name(), autoscaleDeprecated)
		}
	}
	info := &cobra.Command{
		Use:   "info [--json]",
		Short: "List the autoscale rules (limits)",
		Args:  noArgs,
	}
	var asJSON bool
	info.Flags().BoolVar(&asJSON, "json", false, "print a JSON array of limits")
	info.RunE = func(cmd *cobra.Command, _ []string) error { return e.limits(cmd.Context(), asJSON) }

	clear := &cobra.Command{
		Use:   "clear [-f]",
		Short: "Delete every rule, terminating their instances",
		Args:  noArgs,
	}
	var force bool
	clear.Flags().BoolVarP(&force, "force", "f", false, "don't ask for confirmation")
	clear.RunE = func(cmd *cobra.Command, _ []string) error { return e.limitDeleteAll(cmd.Context(), force) }

	cmd.AddCommand(e.autoscaleAllowCmd(), info, clear, e.onDemandSwitchCmd(true), e.onDemandSwitchCmd(false))
	return cmd
}

func (e *Env) autoscaleAllowCmd() *cobra.Command {
	o := limitChange{spot: true}
	cmd := &cobra.Command{
		Use:   "allow INSTANCE_TYPE --max MAX [-f]",
		Short: "Allow up to MAX spot instances of a type; --max 0 removes the rule",
		Long: `Allow the server to run up to MAX spot instances of INSTANCE_TYPE in the
default region at one time. --max 0 removes the rule. Lowering or removing a
rule terminates the extra instances at once; you are asked first unless
--force.`,
		Args: exactArgs("INSTANCE_TYPE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("max") {
				return usagef("--max is required: %s", cmd.UseLine())
			}
			if o.max < 0 {
				return usagef("--max %d: give 0 or more instances (0 removes the rule)", o.max)
			}
			o.instanceType = args[0]
			if o.max == 0 {
				return e.autoscaleRemove(cmd.Context(), o)
			}
			return e.limitPut(cmd.Context(), o)
		},
	}
	cmd.Flags().IntVar(&o.max, "max", 0, "the maximum number of instances")
	cmd.Flags().BoolVarP(&o.force, "force", "f", false, "don't ask for confirmation")
	return cmd
}

// autoscaleRemove is `allow TYPE --max 0`: the rule goes; no rule is fine.
func (e *Env) autoscaleRemove(ctx context.Context, o limitChange) error {
	err := e.limitDelete(ctx, o)
	if client.IsCode(err, api.CodeNotFound) {
		fmt.Fprintf(e.Stdout, "No rule for %s (spot): nothing to remove.\n", o.instanceType)
		return nil
	}
	return err
}
