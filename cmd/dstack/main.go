// Command dstack is the dstack CLI and, as `dstack server`, the control plane.
package main

import (
	"os"

	"github.com/spf13/cobra"

	"github.com/dstackai/dstack/cli"
	"github.com/dstackai/dstack/server/servercmd"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], serverCommand))
}

// serverCommand is `dstack server`, reading the environment through the
// CLI's Env.
func serverCommand(e *cli.Env) *cobra.Command { return servercmd.Command(e.Getenv) }
