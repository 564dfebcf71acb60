package main

import (
	"context"
	"fmt"
	"net/http"
	_ "net/http/pprof" // the server's profile, with -pprof
	"os"
	"os/signal"
	"syscall"

	"github.com/dstackai/dstack/server/servercmd"
)

// serve runs `dstack server` with args in this process: the subprocess the
// tool measures. With DSTACK_SCALE_PPROF set it also serves net/http/pprof
// at that address.
func serve(args []string) int {
	if addr := os.Getenv("DSTACK_SCALE_PPROF"); addr != "" {
		go func() {
			if err := http.ListenAndServe(addr, nil); err != nil {
				fmt.Fprintf(os.Stderr, "pprof: %v\n", err)
			}
		}()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cmd := servercmd.Command(nil)
	cmd.SetArgs(args)
	if err := cmd.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
