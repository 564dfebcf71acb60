// Command dstack-runner is dstack's runner agent; see package runnercli.
package main

import (
	"os"

	"github.com/dstackai/dstack/runner/runnercli"
)

func main() { os.Exit(runnercli.Main(os.Args[1:])) }
