// Command dstack-local-image builds the local backend's runner image from a
// static dstack-runner binary and prints its reference (see
// local.BuildImage). `make local-image` runs it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/moby/moby/client"

	"github.com/dstackai/dstack/backend/local"
)

func main() {
	runnerBin := flag.String("runner", "bin/dstack-runner", "the static dstack-runner binary to put in the image")
	flag.Parse()
	docker, err := client.New(client.FromEnv)
	if err == nil {
		defer docker.Close()
		var ref string
		if ref, err = local.BuildImage(context.Background(), docker, *runnerBin); err == nil {
			fmt.Println(ref)
			return
		}
	}
	fmt.Fprintln(os.Stderr, "dstack-local-image:", err)
	os.Exit(1)
}
