package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/dstackai/dstack/api"
)

// `dstack kubernetes`: the cluster the server launches on-demand runners in
// as Pods. The kubeconfig goes to the server, which checks it against the
// API server before it keeps it (encrypted) and never shows it again.

func (e *Env) kubernetesCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "kubernetes COMMAND",
		Aliases: []string{"k8s"},
		Short:   "Configure the Kubernetes cluster on-demand runners run in",
		Long: `Give the server a Kubernetes cluster to launch on-demand runners in, as Pods:
` + "`dstack kubernetes config --kubeconfig FILE`" + `. Its nodes' instance types
(label node.kubernetes.io/instance-type) are the offers; limits
(` + "`dstack on-demand limit -r CONTEXT -i TYPE --max N`" + `) say which, and how many.

The kubeconfig's user needs, in the namespace: pods create/get/list/watch/delete,
pods/log get, secrets create/get/delete, events list/watch; cluster-wide: nodes
list/watch. docs/kubernetes-rbac.yaml grants exactly these.`,
		Args: noArgs,
	}
	cmd.AddCommand(e.kubernetesConfigCmd(), e.kubernetesInfoCmd(), e.kubernetesClearCmd())
	return cmd
}

func (e *Env) kubernetesConfigCmd() *cobra.Command {
	var (
		file    string
		req     api.KubernetesConfigRequest
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:     "config (--kubeconfig FILE [--context C] | --in-cluster) [--namespace dstack] [--runner-image IMAGE] [--schedule-timeout 5m] [--reserve-cpu M] [--reserve-memory MiB]",
		Aliases: []string{"configure"},
		Short:   "Set the cluster, context and namespace of runner Pods",
		Long: `Set the Kubernetes cluster the server launches on-demand runners in. The server
checks the configuration against the API server before it saves it: the
context exists, the namespace is there, and every RBAC permission the backend
needs is granted (each missing one is named). The kubeconfig is stored
encrypted under the server's key and never shown again.

--in-cluster uses the server Pod's own service account, when the server runs
in the cluster. --runner-image names an image with dstack-runner on its PATH;
without one, runner Pods download dstack-runner from the server at start.
Docker and python jobs run in their own image, the runner copied into their
Pod by an init container; bash jobs run in the runner image.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" && !req.InCluster {
				return &usageError{err: errors.New("give --kubeconfig FILE, or --in-cluster when the server runs in the cluster")}
			}
			if file != "" {
				b, err := os.ReadFile(file)
				if err != nil {
					return fmt.Errorf("read the kubeconfig: %w", err)
				}
				req.Kubeconfig = string(b)
			}
			req.ScheduleTimeoutSeconds = int(timeout / time.Second)
			return e.kubernetesConfig(cmd.Context(), req)
		},
	}
	f := cmd.Flags()
	f.StringVar(&file, "kubeconfig", "", "kubeconfig file with the cluster's credentials")
	f.StringVar(&req.Context, "context", "", "kubeconfig context (default: its current context); it is the limits' region")
	f.StringVar(&req.Namespace, "namespace", "dstack", "namespace of the runner Pods")
	f.BoolVar(&req.InCluster, "in-cluster", false, "use the server Pod's service account")
	f.StringVar(&req.RunnerImage, "runner-image", "", "image with dstack-runner on its PATH (default: download it from the server)")
	f.Int64Var(&req.ReserveMilliCPU, "reserve-cpu", 0, "millicores of each node kept back from runner Pods, for the node's daemons (default 100; -1 none)")
	f.Int64Var(&req.ReserveMemoryMiB, "reserve-memory", 0, "MiB of each node's memory kept back from runner Pods (default 256; -1 none)")
	f.DurationVar(&timeout, "schedule-timeout", 0, "a runner Pod no node takes this long is a launch refused for capacity (default: the server's --k8s-schedule-timeout)")
	return cmd
}

func (e *Env) kubernetesConfig(ctx context.Context, req api.KubernetesConfigRequest) error {
	c, err := e.client()
	if err != nil {
		return err
	}
	got, err := c.KubernetesPut(ctx, req)
	if err != nil {
		return c.explain(err)
	}
	fmt.Fprintf(e.Stdout, "Kubernetes configured: context %s, namespace %s.\n", got.Context, got.Namespace)
	if got.InstanceTypes != "" {
		fmt.Fprintf(e.Stdout, "Instance types: %s.\n", got.InstanceTypes)
	}
	fmt.Fprintf(e.Stdout, "Allow some with `dstack on-demand limit -r %s -i TYPE --max N`.\n", got.Context)
	return nil
}

func (e *Env) kubernetesInfoCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "info [--json]",
		Short: "Show the Kubernetes configuration (never the kubeconfig)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			cur, err := c.KubernetesGet(cmd.Context())
			if err != nil {
				return c.explain(err)
			}
			if asJSON {
				return writeJSON(e.Stdout, cur)
			}
			if !cur.Configured {
				fmt.Fprintln(e.Stdout, "Kubernetes is not configured: run `dstack kubernetes config --kubeconfig FILE`.")
				return nil
			}
			tw := tabwriter.NewWriter(e.Stdout, 0, 4, 2, ' ', 0)
			row := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, v) }
			row("Context (region):", cur.Context)
			if cur.Server != "" {
				row("API server:", cur.Server)
			}
			row("Namespace:", cur.Namespace)
			image := "none: runner Pods download dstack-runner from the server"
			if cur.RunnerImage != "" {
				image = cur.RunnerImage
			}
			row("Runner image:", image)
			row("Reserved per node:", fmt.Sprintf("%dm CPU, %d MiB", cur.ReserveMilliCPU, cur.ReserveMemoryMiB))
			row("Schedule timeout:", (time.Duration(cur.ScheduleTimeoutSeconds) * time.Second).String())
			if cur.InstanceTypes != "" {
				row("Instance types:", cur.InstanceTypes)
			}
			if cur.UpdatedAt != nil {
				when := cur.UpdatedAt.Local().Format("2006-01-02 15:04")
				if cur.UpdatedBy != "" {
					when += " by " + cur.UpdatedBy
				}
				row("Updated:", when)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the configuration as JSON")
	return cmd
}

func (e *Env) kubernetesClearCmd() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "clear [-f]",
		Short: "Delete the Kubernetes configuration from the server",
		Long: `Delete the Kubernetes configuration from the server: on-demand runners no
longer run in the cluster. Your limits are kept. The server refuses while
runner Pods run: terminate them first with ` + "`dstack on-demand disable`" + ` (or by
deleting their limits). You are asked first unless --force.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			c, err := e.client()
			if err != nil {
				return err
			}
			cur, err := c.KubernetesGet(ctx)
			if err != nil {
				return c.explain(err)
			}
			if !cur.Configured {
				fmt.Fprintln(e.Stdout, "Kubernetes is not configured: nothing to clear.")
				return nil
			}
			if !force {
				if err := c.KubernetesDelete(ctx, true); err != nil {
					return awsClearErr(c, err)
				}
				if err := e.ask(fmt.Sprintf("Clearing the Kubernetes configuration (context %s) stops on-demand runners in the cluster", cur.Context)); err != nil {
					return err
				}
			}
			if err := c.KubernetesDelete(ctx, false); err != nil {
				return awsClearErr(c, err)
			}
			fmt.Fprintln(e.Stdout, "Kubernetes configuration cleared. Your limits are kept: they wait until `dstack kubernetes config` is run again.")
			return nil
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "don't ask for confirmation")
	return cmd
}
