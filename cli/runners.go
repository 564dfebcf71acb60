package cli

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/dstackai/dstack/api"
)

func (e *Env) runnersCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "runners [--json]",
		Short: "List runners",
		Long: `List the runners: the machines that run jobs. JOB is the run of the job a
runner has now. When some runners are on-demand instances, BACKEND, REGION,
INSTANCE TYPE, PURCHASE TYPE (spot or on-demand) and INSTANCE (the
instance's state: launching, running, terminating…) describe them;
self-hosted runners show "self-hosted" as their backend.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return e.runners(cmd.Context(), asJSON)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON array of runners")
	cmd.AddCommand(e.runnersRmCmd())
	return cmd
}

func (e *Env) runnersRmCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "rm NAME|ID [--json]",
		Short: "Remove offline runners",
		Long: `Remove the offline runners named NAME, or the runner whose ID is ID, from the
list: a restarted runner registers anew and leaves its old, offline entry
behind. Jobs they ran keep the runner's name. An online runner, one running a
job, or one on an on-demand instance (it goes with its instance) is kept, and
the command says why. The server also removes offline self-hosted runners by
itself after ` + "`dstack server --runner-retention`" + ` (24h by default).
You may remove your own runners; an admin, anyone's.`,
		Example: `  dstack runners rm gpu-box
  dstack runners rm 3f2a9c0d1e4b5a6c`,
		Args: exactArgs("NAME or ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.runnersRm(cmd.Context(), args[0], asJSON)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print what was removed and kept as JSON")
	return cmd
}

func (e *Env) runnersRm(ctx context.Context, ref string, asJSON bool) error {
	c, err := e.client()
	if err != nil {
		return err
	}
	out, err := c.RunnerRemove(ctx, ref)
	if err != nil {
		return c.explain(err)
	}
	if asJSON {
		return writeJSON(e.Stdout, out)
	}
	for _, r := range out.Removed {
		fmt.Fprintf(e.Stdout, "Removed runner %s (%s)\n", r.Name, r.ID)
	}
	for _, r := range out.Kept {
		fmt.Fprintf(e.Stderr, "Kept runner %s (%s): %s\n", r.Name, r.ID, r.Reason)
	}
	return nil
}

func (e *Env) runners(ctx context.Context, asJSON bool) error {
	c, err := e.client()
	if err != nil {
		return err
	}
	rs, err := c.RunnerList(ctx)
	if err != nil {
		return c.explain(err)
	}
	if asJSON {
		return writeJSON(e.Stdout, rs)
	}
	if len(rs) == 0 {
		fmt.Fprintln(e.Stderr, "No runners yet: on a machine, run `dstack-runner config --token TOKEN --server URL` and `dstack-runner start`.")
		return nil
	}
	// On-demand runners add their instance's columns; a list of self-hosted
	// runners only keeps to the first eight.
	onDemand := false
	for _, r := range rs {
		onDemand = onDemand || r.Backend != ""
	}
	headers := []string{"name", "host", "status", "cpu", "memory", "gpu", "disk", "job"}
	if onDemand {
		headers = append(headers, "backend", "region", "instance type", "purchase type", "instance")
	}
	t := newTable(e.Stdout, headers...)
	for _, r := range rs {
		cpu := ""
		if r.Resources.CPUs > 0 {
			cpu = strconv.Itoa(r.Resources.CPUs)
		}
		job := r.RunName
		if job == "" {
			job = r.JobID
		}
		status := string(r.Status)
		if r.InterruptedAt != nil {
			status += " (interrupted)" // the cloud reclaims its machine: it takes no more jobs
		}
		row := []string{r.Name, r.Hostname, status, cpu, formatMiB(r.Resources.MemoryMiB), formatGPUs(r.Resources.GPUs), formatMiB(r.Resources.DiskMiB), job}
		if onDemand {
			backend := r.Backend
			if backend == "" {
				backend = "self-hosted"
			}
			row = append(row, backend, r.Region, r.InstanceType, r.PurchaseType, r.InstanceState)
		}
		t.row(row...)
	}
	return t.flush()
}

// formatGPUs groups a host's GPUs: "2xA100 (40 GiB)", "1xT4 (16 GiB), 1xA10 (24 GiB)".
func formatGPUs(gpus []api.GPU) string {
	type key struct {
		name string
		mem  int64
	}
	var order []key
	count := map[key]int{}
	for _, g := range gpus {
		k := key{g.Name, g.MemoryMiB}
		if count[k] == 0 {
			order = append(order, k)
		}
		count[k]++
	}
	parts := make([]string, 0, len(order))
	for _, k := range order {
		s := fmt.Sprintf("%dx%s", count[k], k.name)
		if m := formatMiB(k.mem); m != "" {
			s += " (" + m + ")"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ", ")
}
