package servercmd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/moby/moby/client"

	"github.com/dstackai/dstack/backend"
	"github.com/dstackai/dstack/backend/local"
)

// localOptions are the flags of the local Docker backend.
type localOptions struct {
	mode         string // auto, on or off
	runnerBinary string
	network      string
}

// defaultRunnerBinary is dstack-runner next to this executable.
func defaultRunnerBinary() string {
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	return filepath.Join(filepath.Dir(exe), "dstack-runner")
}

// localBackend builds the local backend as --local-backend says: "on" fails
// when it cannot be had, "auto" turns it on when the Docker engine answers
// and the runner binary is found, and says why not otherwise; "off" skips
// it. The second result is the containers' gateway, the host as they see it.
func localBackend(ctx context.Context, log *slog.Logger, o localOptions) (backend.Backend, string, error) {
	switch o.mode {
	case "off":
		return nil, "", nil
	case "on", "auto":
	default:
		return nil, "", fmt.Errorf("--local-backend %q: use auto, on or off", o.mode)
	}
	b, gw, err := buildLocal(ctx, log, o)
	if err == nil {
		log.Info("local backend on: on-demand instances are Docker containers on this host", "gateway", gw, "network", o.network)
		return b, gw, nil
	}
	if o.mode == "on" {
		return nil, "", fmt.Errorf("local backend: %w", err)
	}
	log.Info("local backend off (--local-backend auto)", "reason", err.Error())
	return nil, "", nil
}

func buildLocal(ctx context.Context, log *slog.Logger, o localOptions) (backend.Backend, string, error) {
	bin := o.runnerBinary
	if bin == "" {
		bin = defaultRunnerBinary()
	}
	if _, err := os.Stat(bin); err != nil {
		return nil, "", fmt.Errorf("no dstack-runner binary at %s: build it with `make build`, or give --runner-binary", bin)
	}
	docker, err := client.New(client.FromEnv)
	if err != nil {
		return nil, "", fmt.Errorf("docker client: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	_, err = docker.Ping(pctx, client.PingOptions{})
	cancel()
	if err != nil {
		docker.Close()
		return nil, "", errors.New("the Docker engine does not answer (is it running, and may this user use it?)")
	}
	bctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	ref, err := local.BuildImage(bctx, docker, bin)
	if err != nil {
		docker.Close()
		return nil, "", fmt.Errorf("build the runner image: %w", err)
	}
	b, err := local.New(docker, local.Config{Image: ref, Network: o.network, Logger: log})
	if err != nil {
		docker.Close()
		return nil, "", err
	}
	gw, err := b.Gateway(ctx)
	if err != nil {
		docker.Close()
		return nil, "", fmt.Errorf("find the containers' gateway: %w", err)
	}
	return b, gw, nil
}

// gatewayHosts is where the server listens besides host so that the local
// backend's containers reach it: the Docker gateway when host is a loopback
// address (the default 127.0.0.1), since the backend gives its containers
// the server's URL with the gateway in place of a loopback host. None when
// --external-url tells them another way, when the containers share the
// host's network, or when host is another address, which they reach as it
// is.
func gatewayHosts(host, gateway, externalURL, network string) []string {
	if externalURL != "" || gateway == "" || network == "host" {
		return nil
	}
	ip := net.ParseIP(host)
	if strings.EqualFold(host, "localhost") || (ip != nil && ip.IsLoopback()) {
		return []string{gateway}
	}
	return nil
}
