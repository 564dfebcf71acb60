package runnercli

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
)

// newCopyCmd is `dstack-runner copy PATH`: it writes the running binary to
// PATH, for a container of another image to run it. A Kubernetes runner
// Pod's init container does so from the runner image into the Pod's shared
// volume, as Tekton and Argo inject their entrypoints: dstack-runner is
// statically linked, so it runs in the job's image whatever that has.
func newCopyCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "copy PATH",
		Short: "Copy this dstack-runner binary to PATH (for a container of another image to run it)",
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usageError{fmt.Errorf("copy takes one argument, the path to write the binary to (see `dstack-runner copy --help`)")}
			}
			return nil
		},
		RunE: func(_ *cobra.Command, args []string) error {
			if err := copySelf(args[0]); err != nil {
				return err
			}
			fmt.Fprintf(g.env.Stdout, "dstack-runner copied to %s\n", args[0])
			return nil
		},
	}
}

// copySelf writes the running executable to dst, mode 0755, through a
// temporary file in dst's directory renamed into place, so that dst is
// never seen half written.
func copySelf(dst string) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find this binary: %w", err)
	}
	src, err := os.Open(self)
	if err != nil {
		return fmt.Errorf("read this binary: %w", err)
	}
	defer src.Close()
	dir := filepath.Dir(dst)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("copy to %s: %w", dst, err)
	}
	tmp, err := os.CreateTemp(dir, ".dstack-runner-*")
	if err != nil {
		return fmt.Errorf("copy to %s: %w", dst, err)
	}
	defer os.Remove(tmp.Name()) // once renamed, there is nothing to remove
	if _, err := io.Copy(tmp, src); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("copy to %s: %w", dst, err)
	}
	if err := tmp.Chmod(0o755); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("copy to %s: %w", dst, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("copy to %s: %w", dst, err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return fmt.Errorf("copy to %s: %w", dst, err)
	}
	return nil
}
