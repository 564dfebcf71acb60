package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/dstackai/dstack/workflow"
)

func (e *Env) initCmd() *cobra.Command {
	var force bool
	var dir string
	cmd := &cobra.Command{
		Use:   "init [--force] [--dir DIR]",
		Short: "Write a sample .dstack/workflows.yaml",
		Long: `Write a sample .dstack/workflows.yaml in the current directory (or --dir):
two workflows, train depending on prepare's artifacts. An existing file is
kept unless --force.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return e.init(dir, force)
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "overwrite an existing workflows file")
	cmd.Flags().StringVar(&dir, "dir", "", "the project's directory (default: the current one)")
	return cmd
}

func (e *Env) init(dir string, force bool) error {
	dir, err := e.projectDir(dir)
	if err != nil {
		return err
	}
	path := workflow.Path(dir)
	if !force {
		for _, p := range []string{path, filepath.Join(dir, ".dstack", "workflows.yml")} {
			if _, err := os.Stat(p); err == nil {
				return fmt.Errorf("%s already exists: edit it, or add --force to replace it with the sample", p)
			} else if !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("init: %w", err)
	}
	if err := os.WriteFile(path, workflow.Sample(), 0o644); err != nil {
		return fmt.Errorf("init: %w", err)
	}
	fmt.Fprintf(e.Stdout, "Wrote %s.\n", path)
	next := "dstack run WORKFLOW"
	if f, err := workflow.Load(dir); err == nil {
		if names := f.Names(); len(names) > 0 {
			next = "dstack run " + names[len(names)-1]
		}
	}
	fmt.Fprintf(e.Stdout, "Next: edit it to describe your workflows, then run one with `%s`.\n", next)
	return nil
}

// projectDir is dir made absolute, or the working directory when empty.
func (e *Env) projectDir(dir string) (string, error) {
	if dir == "" {
		dir = e.Dir
	}
	if dir == "" {
		return os.Getwd()
	}
	if !filepath.IsAbs(dir) && e.Dir != "" {
		dir = filepath.Join(e.Dir, dir)
	}
	return filepath.Abs(dir)
}
