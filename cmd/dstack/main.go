// Command dstack is the dstack CLI and, as `dstack server`, the control plane.
package main

import (
	"os"

	"github.com/dstackai/dstack/cli"
	"github.com/dstackai/dstack/server/servercmd"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], servercmd.Command()))
}
