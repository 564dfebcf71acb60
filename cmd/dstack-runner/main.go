// Command dstack-runner is dstack's runner agent; see package runnercli.
//
// As a container's first process (a Kubernetes runner Pod), it runs itself
// again as its child and reaps the processes jobs leave behind (package
// initproc).
package main

import (
	"os"

	"github.com/dstackai/dstack/internal/initproc"
	"github.com/dstackai/dstack/runner/runnercli"
)

func main() {
	if initproc.Needed() {
		os.Exit(initproc.Run(os.Args[1:]))
	}
	os.Exit(runnercli.Main(os.Args[1:]))
}
