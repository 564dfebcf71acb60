// Command dstack-ec2fake runs an EC2-compatible endpoint whose instances
// boot as Docker containers on this machine, to try dstack's AWS backend
// end to end without an AWS account:
//
//	go run ./cmd/dstack-ec2fake [-port 3000]
//
// It prints the dstack server and dstack aws config command lines to use.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/dstackai/dstack/internal/ec2fake/ec2docker"
)

func main() {
	port := flag.Int("port", 3000, "the port dstack server will listen on (for the command lines printed)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := ec2docker.Serve(ctx, os.Stdout, ec2docker.ServeOptions{
		AccessKeyID: "AKIAEC2FAKE000000001", SecretAccessKey: "ec2fake/secret/key/for/trying/dstack", ServerPort: *port,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "dstack-ec2fake:", err)
		os.Exit(1)
	}
}
