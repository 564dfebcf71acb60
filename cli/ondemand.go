package cli

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/client"
)

// `dstack on-demand`: the limits of on-demand runners and their switch.
// `dstack autoscale` (autoscale.go) is the older spelling of the same calls.
//
// A change that would terminate running instances (a lower maximum, a
// deleted limit, disabling) is first asked of the server as a dry run, which
// answers how many instances go; the command then says so and asks, unless
// --force. Without a terminal to ask on it refuses.

func (e *Env) onDemandCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "on-demand COMMAND",
		Short: "Manage on-demand runners: limits, enable, disable",
		Long: `On-demand runners are instances the server launches for pending jobs, within
limits you set per region, instance type and purchase type (spot or
on-demand), and terminates when they are idle.`,
		Args: noArgs,
	}
	cmd.AddCommand(e.limitCmd(), e.limitsCmd(), e.onDemandSwitchCmd(true), e.onDemandSwitchCmd(false), e.onDemandStatusCmd(), e.budgetCmd())
	return cmd
}

func (e *Env) limitCmd() *cobra.Command {
	var o limitChange
	var del bool
	cmd := &cobra.Command{
		Use:   "limit [-r REGION] -i INSTANCE_TYPE [--spot] [-m MAX] [--delete] [-f]",
		Short: "Add, change or delete a limit",
		Long: `Allow the server to run up to MAX on-demand instances (1 unless given) of
INSTANCE_TYPE in REGION at one time, spot ones with --spot. The region
defaults to the backend's default region (` + "`local`" + ` for the local Docker
backend). --delete deletes the limit. Lowering or deleting a limit
terminates the extra instances at once; you are asked first unless --force.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.instanceType == "" {
				return usagef("--instance-type (-i) is required: %s", cmd.UseLine())
			}
			if del {
				if cmd.Flags().Changed("max") {
					return usagef("--delete and --max go separately: --delete removes the limit")
				}
				return e.limitDelete(cmd.Context(), o)
			}
			if o.max < 0 {
				return usagef("--max %d: give 0 or more instances", o.max)
			}
			return e.limitPut(cmd.Context(), o)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.region, "region", "r", "", "region name (default: the backend's default region)")
	f.StringVarP(&o.instanceType, "instance-type", "i", "", "instance type, e.g. local.small or m5.xlarge")
	f.BoolVar(&o.spot, "spot", false, "spot purchase type")
	f.IntVarP(&o.max, "max", "m", 1, "maximum number of instances")
	f.BoolVar(&del, "delete", false, "delete the limit")
	f.BoolVarP(&o.force, "force", "f", false, "don't ask for confirmation")
	f.StringVar(&o.backend, "backend", "", "backend (default: the one that offers the region)")
	return cmd
}

func (e *Env) limitsCmd() *cobra.Command {
	var asJSON, deleteAll, force bool
	cmd := &cobra.Command{
		Use:   "limits [--json] [--delete-all [-f]]",
		Short: "List the limits, or delete them all",
		Long: `List the server's limits: the maximum of each, the instance type's resources, how many
instances run, and a note while the cloud has no capacity for the type.
--delete-all deletes every limit and terminates their instances.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if deleteAll {
				return e.limitDeleteAll(cmd.Context(), force)
			}
			return e.limits(cmd.Context(), asJSON)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON array of limits")
	cmd.Flags().BoolVar(&deleteAll, "delete-all", false, "delete every limit")
	cmd.Flags().BoolVarP(&force, "force", "f", false, "don't ask for confirmation")
	return cmd
}

func (e *Env) onDemandSwitchCmd(enable bool) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "enable",
		Short: "Enable on-demand runners",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return e.onDemandSet(cmd.Context(), enable, force)
		},
	}
	if !enable {
		cmd.Use, cmd.Short = "disable [-f]", "Disable on-demand runners, terminating their instances"
		cmd.Long = `Disable on-demand runners: the limits are kept, and every running instance is
terminated at once; you are asked first unless --force.`
		cmd.Flags().BoolVarP(&force, "force", "f", false, "don't ask for confirmation")
	}
	return cmd
}

func (e *Env) onDemandStatusCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status [--json]",
		Short: "Say whether on-demand runners are enabled",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return e.onDemandStatus(cmd.Context(), asJSON)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the status as JSON")
	return cmd
}

// limitChange is a limit as the user names it on the command line.
type limitChange struct {
	backend, region, instanceType string
	spot                          bool
	max                           int
	force                         bool
}

func (o limitChange) purchase() string {
	if o.spot {
		return api.PurchaseSpot
	}
	return api.PurchaseOnDemand
}

// limitName is "local.small (spot) in region local".
func limitName(l api.Limit) string {
	return fmt.Sprintf("%s (%s) in region %s", l.InstanceType, l.PurchaseType, l.Region)
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return strconv.Itoa(n) + " " + what + "s"
}

func (e *Env) limitPut(ctx context.Context, o limitChange) error {
	c, err := e.client()
	if err != nil {
		return err
	}
	req := api.LimitPutRequest{Backend: o.backend, Region: o.region, InstanceType: o.instanceType, PurchaseType: o.purchase(), Max: o.max}
	if !o.force {
		p, err := c.LimitPut(ctx, req, true)
		if err != nil {
			return c.explain(err)
		}
		what := fmt.Sprintf("Lowering the limit of %s from %d to %d", limitName(p.Limit), p.PreviousMax, o.max)
		if err := e.confirm(p.Terminating, what); err != nil {
			return err
		}
	}
	res, err := c.LimitPut(ctx, req, false)
	if err != nil {
		return c.explain(err)
	}
	switch {
	case res.Created:
		fmt.Fprintf(e.Stdout, "Limit added: up to %s of %s.\n", plural(res.Limit.Max, "instance"), limitName(res.Limit))
	case res.PreviousMax == res.Limit.Max:
		fmt.Fprintf(e.Stdout, "Limit unchanged: up to %s of %s.\n", plural(res.Limit.Max, "instance"), limitName(res.Limit))
	default:
		fmt.Fprintf(e.Stdout, "Limit changed: up to %s of %s (was %d).\n", plural(res.Limit.Max, "instance"), limitName(res.Limit), res.PreviousMax)
	}
	e.terminating(res.Terminating)
	return nil
}

func (e *Env) limitDelete(ctx context.Context, o limitChange) error {
	c, err := e.client()
	if err != nil {
		return err
	}
	k := client.LimitKey{Backend: o.backend, Region: o.region, InstanceType: o.instanceType, PurchaseType: o.purchase()}
	if !o.force {
		p, err := c.LimitDelete(ctx, k, true)
		if err != nil {
			return c.explain(err)
		}
		if len(p.Deleted) > 0 {
			if err := e.confirm(p.Terminating, "Deleting the limit of "+limitName(p.Deleted[0])); err != nil {
				return err
			}
		}
	}
	res, err := c.LimitDelete(ctx, k, false)
	if err != nil {
		return c.explain(err)
	}
	for _, l := range res.Deleted {
		fmt.Fprintf(e.Stdout, "Limit deleted: %s.\n", limitName(l))
	}
	e.terminating(res.Terminating)
	return nil
}

func (e *Env) limitDeleteAll(ctx context.Context, force bool) error {
	c, err := e.client()
	if err != nil {
		return err
	}
	if !force {
		p, err := c.LimitDeleteAll(ctx, true)
		if err != nil {
			return c.explain(err)
		}
		if err := e.confirm(p.Terminating, "Deleting "+plural(len(p.Deleted), "limit")); err != nil {
			return err
		}
	}
	res, err := c.LimitDeleteAll(ctx, false)
	if err != nil {
		return c.explain(err)
	}
	if len(res.Deleted) == 0 {
		fmt.Fprintln(e.Stdout, "No limits to delete.")
		return nil
	}
	fmt.Fprintf(e.Stdout, "Deleted %s.\n", plural(len(res.Deleted), "limit"))
	e.terminating(res.Terminating)
	return nil
}

func (e *Env) limits(ctx context.Context, asJSON bool) error {
	c, err := e.client()
	if err != nil {
		return err
	}
	ls, err := c.LimitList(ctx)
	if err != nil {
		return c.explain(err)
	}
	if asJSON {
		return writeJSON(e.Stdout, ls)
	}
	if len(ls) == 0 {
		fmt.Fprintln(e.Stderr, "No limits yet: add one with `dstack on-demand limit -i INSTANCE_TYPE [--spot] [-m MAX]`.")
	} else if err := e.limitsTable(ls); err != nil {
		return err
	}
	if st, err := c.OnDemandGet(ctx); err == nil && !st.Enabled {
		fmt.Fprintln(e.Stderr, "On-demand runners are disabled: no instances are launched until `dstack on-demand enable`.")
	}
	return nil
}

// limitsTable prints REGION, INSTANCE TYPE, PURCHASE TYPE, MAXIMUM and the
// type's resources, RUNNING and a capacity NOTE; BACKEND first when the
// limits are of several backends.
func (e *Env) limitsTable(ls []api.Limit) error {
	multi := false
	for _, l := range ls {
		multi = multi || l.Backend != ls[0].Backend
	}
	headers := []string{"region", "instance type", "purchase type", "maximum", "cpu", "memory", "gpu", "running", "note"}
	if multi {
		headers = append([]string{"backend"}, headers...)
	}
	t := newTable(e.Stdout, headers...)
	for _, l := range ls {
		var cpu, mem, gpu string
		if r := l.Resources; r != nil {
			cpu, mem, gpu = strconv.Itoa(r.CPUs), formatMiB(r.MemoryMiB), formatGPUs(r.GPUs)
		}
		row := []string{l.Region, l.InstanceType, l.PurchaseType, strconv.Itoa(l.Max), cpu, mem, gpu, strconv.Itoa(l.Running), e.capacityNote(l)}
		if multi {
			row = append([]string{l.Backend}, row...)
		}
		t.row(row...)
	}
	return t.flush()
}

// capacityNote is "No capacity since 10:42" while the cloud refuses the
// limit's offer: the time of day, with the date when not today.
func (e *Env) capacityNote(l api.Limit) string {
	if l.UnavailableSince == nil {
		return ""
	}
	since := l.UnavailableSince.Local()
	layout := "15:04"
	if y, m, d := e.Now().Local().Date(); since.Year() != y || since.Month() != m || since.Day() != d {
		layout = "Jan 2 15:04"
	}
	return "No capacity since " + since.Format(layout)
}

func (e *Env) onDemandSet(ctx context.Context, enable, force bool) error {
	c, err := e.client()
	if err != nil {
		return err
	}
	if !enable && !force {
		p, err := c.OnDemandSet(ctx, false, true)
		if err != nil {
			return c.explain(err)
		}
		if err := e.confirm(p.Terminating, "Disabling on-demand runners"); err != nil {
			return err
		}
	}
	st, err := c.OnDemandSet(ctx, enable, false)
	if err != nil {
		return c.explain(err)
	}
	if enable {
		fmt.Fprintln(e.Stdout, "On-demand runners are enabled.")
		e.noBackendNote(st)
		return nil
	}
	fmt.Fprintln(e.Stdout, "On-demand runners are disabled; the limits are kept.")
	e.terminating(st.Terminating)
	return nil
}

func (e *Env) onDemandStatus(ctx context.Context, asJSON bool) error {
	c, err := e.client()
	if err != nil {
		return err
	}
	st, err := c.OnDemandGet(ctx)
	if err != nil {
		return c.explain(err)
	}
	if asJSON {
		return writeJSON(e.Stdout, st)
	}
	state := "disabled"
	if st.Enabled {
		state = "enabled"
	}
	fmt.Fprintf(e.Stdout, "On-demand runners are %s: %s, %s running.\n", state, plural(st.Limits, "limit"), plural(st.Running, "instance"))
	if b := st.Budget; b != nil {
		fmt.Fprintf(e.Stdout, "Monthly budget: %s, %s spent since %s.\n", money(b.Monthly, b.Currency), money(b.MonthCost, b.Currency), b.MonthStart.Format("Jan 2"))
		if b.Reached {
			fmt.Fprintf(e.Stdout, "New launches are stopped: %s\n", b.Reason)
		}
	}
	e.noBackendNote(st)
	return nil
}

// noBackendNote warns that nothing can be launched without a backend.
func (e *Env) noBackendNote(st *api.OnDemandStatus) {
	if len(st.Backends) == 0 {
		fmt.Fprintln(e.Stderr, "This server has no backend to launch instances on: run `dstack server` on a host with Docker for the local backend, or configure AWS with `dstack aws config`.")
	}
}

// terminating says how many instances a change terminates.
func (e *Env) terminating(n int) {
	if n > 0 {
		fmt.Fprintf(e.Stdout, "Terminating %s.\n", plural(n, "instance"))
	}
}

// confirm asks before a change (what) that terminates n instances; nothing
// to ask when n is 0. Without a terminal it refuses: a script must say
// --force.
func (e *Env) confirm(n int, what string) error {
	if n == 0 {
		return nil
	}
	return e.ask(fmt.Sprintf("%s would terminate %s", what, plural(n, "running instance")))
}

// interactive reports whether the user can be asked: stdin and stderr are
// a terminal.
func (e *Env) interactive() bool {
	in, ok := e.Stdin.(io.Writer) // a terminal is a file, read and written
	return ok && e.IsTerminal(in) && e.IsTerminal(e.Stderr)
}

// ask asks whether to go ahead with what; without a terminal it refuses: a
// script must say --force.
func (e *Env) ask(what string) error {
	if !e.interactive() {
		return fmt.Errorf("%s: run it again with --force (-f) to go ahead, or in a terminal to be asked", what)
	}
	fmt.Fprintf(e.Stderr, "%s. Continue? [y/N] ", what)
	line, _ := bufio.NewReader(e.Stdin).ReadString('\n')
	if !isYes(line) {
		return &exitError{code: ExitError, msg: "cancelled: nothing was changed"}
	}
	return nil
}

// isYes reads an answer to a yes/no question; anything but y or yes is no.
func isYes(answer string) bool {
	switch strings.ToLower(strings.TrimSpace(answer)) {
	case "y", "yes":
		return true
	}
	return false
}
