// Package ec2docker boots the instances of an ec2fake.Server as Docker
// containers, so that the whole AWS path (the server's RunInstances, the
// user data, the runner's install from the server, its join, spot
// interruptions through IMDSv2) runs on one machine with no AWS account.
//
// An instance is a container of a bare image (FROM scratch, a static busybox
// and nothing else) on the default bridge network, its hostname the
// instance ID, running the instance's user data with sh and
// DSTACK_IMDS_ENDPOINT naming the metadata server the fake runs for it. The
// fake's metadata servers must listen where containers reach them: give
// ec2fake.Options.IMDSListen the bridge's gateway (Gateway) with port 0.
// What the user data needs from the server, it downloads, so the server
// must listen where containers reach it too (--host 0.0.0.0 and
// --external-url http://GATEWAY:PORT).
//
//	m, _ := ec2docker.New(ctx, docker, log.Printf)
//	gw, _ := m.Gateway(ctx)
//	fake := ec2fake.New(ec2fake.Options{IMDSListen: gw + ":0", Boot: m.Boot, Terminated: m.PowerOff})
package ec2docker

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/dstackai/dstack/backend/aws/ec2fake"
	"github.com/dstackai/dstack/internal/scratch"
)

// Label marks the containers and the image of a Machines.
const Label = "dstack.ec2fake"

// callTimeout bounds one call to the engine.
const callTimeout = time.Minute

// Machines are the containers of one fake EC2's instances.
type Machines struct {
	docker *client.Client
	image  string
	id     string // this Machines' label value
	logf   func(format string, args ...any)

	mu         sync.Mutex
	containers map[string]string // instance ID → container ID
}

// New builds the instances' image with the busybox scratch.FindBusybox
// finds (Debian's busybox-static) and returns Machines that boot nothing
// yet. logf (nil: silent) hears of boots and failures.
func New(ctx context.Context, docker *client.Client, logf func(format string, args ...any)) (*Machines, error) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	busybox := scratch.FindBusybox()
	if busybox == "" {
		return nil, errors.New("no static busybox: install Debian's busybox-static (apt-get install busybox-static)")
	}
	bb, err := scratch.BusyboxEntries(busybox, "rootfs/bin")
	if err != nil {
		return nil, err
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	m := &Machines{docker: docker, id: hex.EncodeToString(b), logf: logf, containers: map[string]string{}}
	m.image = "dstack-ec2fake-instance:" + m.id
	files := append([]scratch.Entry{
		{Name: "Dockerfile", Mode: 0o644, Data: []byte("FROM scratch\nCOPY rootfs /\n")},
		{Name: "rootfs/tmp/", Mode: 0o1777, Dir: true},
		{Name: "rootfs/root/", Mode: 0o700, Dir: true},
		{Name: "rootfs/usr/local/bin/", Mode: 0o755, Dir: true},
	}, bb...)
	if err := scratch.Build(ctx, docker, files, build.ImageBuildOptions{Tags: []string{m.image}, Labels: map[string]string{Label: m.id}}); err != nil {
		return nil, fmt.Errorf("build the instances' image: %w", err)
	}
	return m, nil
}

// Gateway is the host's IPv4 address on Docker's default bridge.
func (m *Machines) Gateway(ctx context.Context) (string, error) {
	nw, err := m.docker.NetworkInspect(ctx, "bridge", network.InspectOptions{})
	if err != nil {
		return "", err
	}
	for _, cfg := range nw.IPAM.Config {
		if ip := net.ParseIP(cfg.Gateway); ip.To4() != nil {
			return ip.String(), nil
		}
		// The default bridge's IPAM names only the subnet; its gateway is
		// the subnet's first host address.
		if _, n, err := net.ParseCIDR(cfg.Subnet); err == nil && n.IP.To4() != nil {
			ip := n.IP.To4()
			return net.IPv4(ip[0], ip[1], ip[2], ip[3]+1).String(), nil
		}
	}
	return "", errors.New("docker's bridge network has no IPv4 gateway")
}

// Boot starts the container of a launched instance (ec2fake.Options.Boot).
func (m *Machines) Boot(in ec2fake.Instance, imdsURL string) {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	created, err := m.docker.ContainerCreate(ctx, &container.Config{
		Image:    m.image,
		Cmd:      []string{"sh", "-c", in.UserData},
		Env:      []string{"DSTACK_IMDS_ENDPOINT=" + imdsURL, "PATH=/usr/local/bin:/bin", "HOME=/root"},
		Hostname: in.ID,
		Labels:   map[string]string{Label: m.id, "instance": in.ID},
	}, &container.HostConfig{}, nil, nil, "")
	if err != nil {
		m.logf("ec2docker: boot %s: %v", in.ID, err)
		return
	}
	m.mu.Lock()
	m.containers[in.ID] = created.ID
	m.mu.Unlock()
	if err := m.docker.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		m.logf("ec2docker: boot %s: %v", in.ID, err)
		return
	}
	m.logf("ec2docker: instance %s (%s) booted as container %.12s", in.ID, in.InstanceType, created.ID)
}

// PowerOff removes the container of a terminated instance
// (ec2fake.Options.Terminated).
func (m *Machines) PowerOff(in ec2fake.Instance) {
	m.mu.Lock()
	id := m.containers[in.ID]
	delete(m.containers, in.ID)
	m.mu.Unlock()
	if id != "" {
		m.remove(id)
		m.logf("ec2docker: instance %s powered off", in.ID)
	}
}

func (m *Machines) remove(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	if err := m.docker.ContainerRemove(ctx, id, container.RemoveOptions{Force: true}); err != nil && !cerrdefs.IsNotFound(err) {
		m.logf("ec2docker: remove container %.12s: %v", id, err)
	}
}

// Output is what an instance's container printed: its boot, the runner's
// log.
func (m *Machines) Output(instanceID string) string {
	m.mu.Lock()
	id := m.containers[instanceID]
	m.mu.Unlock()
	if id == "" {
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	rc, err := m.docker.ContainerLogs(ctx, id, container.LogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		return err.Error()
	}
	defer rc.Close()
	var out bytes.Buffer
	_, _ = stdcopy.StdCopy(&out, &out, rc)
	return out.String()
}

// Instances are the IDs of the instances whose containers are up.
func (m *Machines) Instances() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]string, 0, len(m.containers))
	for id := range m.containers {
		out = append(out, id)
	}
	return out
}

// Close removes every container left and the image.
func (m *Machines) Close() {
	m.mu.Lock()
	ids := m.containers
	m.containers = map[string]string{}
	m.mu.Unlock()
	for _, id := range ids {
		m.remove(id)
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	if _, err := m.docker.ImageRemove(ctx, m.image, image.RemoveOptions{Force: true, PruneChildren: true}); err != nil && !cerrdefs.IsNotFound(err) {
		m.logf("ec2docker: remove image %s: %v", m.image, err)
	}
}

// ServeOptions are the settings of Serve.
type ServeOptions struct {
	AccessKeyID, SecretAccessKey string
	// ServerPort is the port dstack server listens on, for the command
	// lines Serve prints.
	ServerPort int
}

// Serve runs a fake EC2 whose instances boot as containers until ctx ends,
// printing to w how to point dstack server at it; then it removes every
// container and the image.
func Serve(ctx context.Context, w io.Writer, o ServeOptions) error {
	docker, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return err
	}
	defer docker.Close()
	if _, err := docker.Ping(ctx); err != nil {
		return fmt.Errorf("the Docker engine does not answer: %w", err)
	}
	m, err := New(ctx, docker, func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) })
	if err != nil {
		return err
	}
	defer m.Close()
	gw, err := m.Gateway(ctx)
	if err != nil {
		return err
	}
	fake := ec2fake.New(ec2fake.Options{
		Credentials: map[string]string{o.AccessKeyID: o.SecretAccessKey},
		IMDSListen:  net.JoinHostPort(gw, "0"),
		Boot:        m.Boot,
		Terminated:  m.PowerOff,
	})
	defer fake.Close()
	fmt.Fprintf(w, `An EC2-compatible endpoint is listening at %[1]s; its instances boot as Docker containers.
Start the server where they reach it, and give it the credentials:

  dstack server --host 0.0.0.0 --port %[2]d --external-url http://%[3]s:%[2]d --aws-endpoint-url %[1]s
  dstack aws config --access-key-id %[4]s --secret-access-key %[5]s --region us-east-1
  dstack on-demand limit -i m5.large --max 1

Regions: us-east-1, eu-west-1, us-west-2. Ctrl-C stops it and removes the containers.
`, fake.URL(), o.ServerPort, gw, o.AccessKeyID, o.SecretAccessKey)
	<-ctx.Done()
	return nil
}
