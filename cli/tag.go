package cli

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

// tagHelp explains tags once, for both `dstack tag` and `dstack tags`.
const tagHelp = `A tag names a done run, so that workflows of later runs can use its artifacts
without running it again: in .dstack/workflows.yaml,

  depends-on: [prepare:latest-data]

places the artifacts of the job of workflow prepare of the run tagged
latest-data in the working directory, as for a dependency in the same run.
The tag is looked up when the run is submitted: ` + "`dstack run`" + ` fails with an
unknown tag and submits nothing.

Tags are per user. A tag that names another run is refused unless -f/--force
is given, which moves it.`

func (e *Env) tagCmd() *cobra.Command {
	var (
		force, del, list, asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "tag RUN TAG [-f] | tag --delete TAG | tag --list [--json]",
		Short: "Tag a done run, for depends-on: [WORKFLOW:TAG]",
		Long:  tagHelp,
		Example: `  dstack tag swift-otter-42 latest-data
  dstack tag brave-fox-7 latest-data --force
  dstack tag --delete latest-data
  dstack tag --list`,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			switch {
			case list && (del || force):
				return usagef("--list goes without --delete and --force: %s", cmd.UseLine())
			case list:
				if err := noArgs(cmd, args); err != nil {
					return err
				}
				return e.tags(ctx, asJSON)
			case asJSON:
				return usagef("--json goes with --list: dstack tag --list --json")
			case del && force:
				return usagef("--delete goes without --force: dstack tag --delete TAG")
			case del:
				if err := exactArgs("TAG")(cmd, args); err != nil {
					return err
				}
				return e.tagDelete(ctx, args[0])
			}
			if err := exactArgs("RUN", "TAG")(cmd, args); err != nil {
				return err
			}
			return e.tag(ctx, args[0], args[1], force)
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "move the tag when it names another run")
	cmd.Flags().BoolVar(&del, "delete", false, "delete the tag (the run stays)")
	cmd.Flags().BoolVarP(&list, "list", "l", false, "list the tags (as 'dstack tags' does)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "with --list: print a JSON array of tags")
	return cmd
}

func (e *Env) tagsCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "tags [--json]",
		Short: "List tags",
		Long:  "List your tags: each one's run, the run's workflows (which depends-on may\nname as WORKFLOW:TAG) and when the tag was put on the run.\n\n" + tagHelp,
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return e.tags(cmd.Context(), asJSON)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON array of tags")
	return cmd
}

func (e *Env) tag(ctx context.Context, run, name string, force bool) error {
	c, err := e.client()
	if err != nil {
		return err
	}
	res, err := c.TagPut(ctx, name, run, force)
	if err != nil {
		return c.explain(err)
	}
	switch {
	case res.Created:
		fmt.Fprintf(e.Stdout, "Tagged run %s as %s\n", res.Tag.RunName, res.Tag.Name)
	case res.PreviousRunName != "":
		fmt.Fprintf(e.Stdout, "Moved tag %s from run %s to run %s\n", res.Tag.Name, res.PreviousRunName, res.Tag.RunName)
	default:
		fmt.Fprintf(e.Stdout, "Tag %s already names run %s\n", res.Tag.Name, res.Tag.RunName)
	}
	fmt.Fprintf(e.Stderr, "Use its artifacts with depends-on: [%s:%s]\n", res.Tag.Workflow, res.Tag.Name)
	return nil
}

func (e *Env) tagDelete(ctx context.Context, name string) error {
	c, err := e.client()
	if err != nil {
		return err
	}
	t, err := c.TagDelete(ctx, name)
	if err != nil {
		return c.explain(err)
	}
	fmt.Fprintf(e.Stdout, "Deleted tag %s (it named run %s)\n", t.Name, t.RunName)
	return nil
}

func (e *Env) tags(ctx context.Context, asJSON bool) error {
	c, err := e.client()
	if err != nil {
		return err
	}
	ts, err := c.TagList(ctx)
	if err != nil {
		return c.explain(err)
	}
	if asJSON {
		return writeJSON(e.Stdout, ts)
	}
	if len(ts) == 0 {
		fmt.Fprintln(e.Stderr, "No tags yet: tag a done run with `dstack tag RUN TAG`, then depend on it with depends-on: [WORKFLOW:TAG].")
		return nil
	}
	t := newTable(e.Stdout, "tag", "run", "workflows", "tagged")
	now := e.Now()
	for _, tg := range ts {
		t.row(tg.Name, tg.RunName, strings.Join(tg.Workflows, ", "), formatAgo(now, tg.CreatedAt))
	}
	return t.flush()
}
