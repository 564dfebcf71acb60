package executor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"syscall"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
)

// Timeouts of the engine calls that must not hang a job's end.
const (
	// callTimeout bounds a kill, an inspect, a creation, a removal.
	callTimeout = 30 * time.Second
	// outputDrain bounds how long Wait waits for the output stream to end
	// once the container has ended.
	outputDrain = 2 * time.Second
)

// dockerProcess is one job's container, from the pull to the removal.
type dockerProcess struct {
	d     *Docker
	out   *outputWriter
	image string
	cfg   *container.Config
	hc    *container.HostConfig

	// pullCtx ends the pull when the job is stopped before its container
	// exists.
	pullCtx    context.Context
	cancelPull context.CancelFunc

	mu      sync.Mutex
	id      string // the container, once created
	running bool   // started and not yet seen ended: signals go to it
	ended   bool
	stopSig string // the strongest signal asked for: SIGTERM or SIGKILL

	done   chan struct{}
	result Result
}

func newDockerProcess(d *Docker, out io.Writer, image string, cfg *container.Config, hc *container.HostConfig) *dockerProcess {
	p := &dockerProcess{d: d, out: &outputWriter{w: out}, image: image, cfg: cfg, hc: hc, done: make(chan struct{})}
	// The job does not end with the caller's context: stopping is the
	// job's decision, through Terminate and Kill.
	p.pullCtx, p.cancelPull = context.WithCancel(context.Background())
	return p
}

func (p *dockerProcess) run() {
	res := p.execute()
	res.OutputErr = p.out.err()
	p.cancelPull()
	p.mu.Lock()
	p.ended, p.running = true, false
	p.result = res
	p.mu.Unlock()
	close(p.done)
}

// execute runs the container to its end and removes it.
func (p *dockerProcess) execute() Result {
	cli := p.d.cli
	if err := p.ensureImage(); err != nil {
		if res, ok := p.stoppedBeforeStart(); ok {
			return res
		}
		return p.fail(err)
	}
	if res, ok := p.stoppedBeforeStart(); ok {
		return res
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	created, err := cli.ContainerCreate(ctx, client.ContainerCreateOptions{Config: p.cfg, HostConfig: p.hc})
	cancel()
	if err != nil {
		return p.fail(fmt.Errorf("create a container of %s: %w", p.image, err))
	}
	for _, w := range created.Warnings {
		p.d.log.Debug("container created with a warning", "container", short(created.ID), "warning", w)
	}
	p.mu.Lock()
	p.id = created.ID
	p.mu.Unlock()
	defer p.remove()

	// Attached before the start, so that no output is missed. The stream
	// ends when the container's output is closed, at its end.
	ctx, cancel = context.WithTimeout(context.Background(), callTimeout)
	att, err := cli.ContainerAttach(ctx, created.ID, client.ContainerAttachOptions{Stream: true, Stdout: true, Stderr: true})
	cancel()
	if err != nil {
		return p.fail(fmt.Errorf("attach to the container's output: %w", err))
	}
	defer att.Close()
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		_, _ = stdcopy.StdCopy(p.out, p.out, att.Reader)
	}()
	endOutput := func() {
		t := time.NewTimer(outputDrain)
		defer t.Stop()
		select {
		case <-copied:
		case <-t.C:
			att.Close()
			<-copied
		}
	}

	// A signal waits for the start to be over, and then finds the
	// container running.
	p.mu.Lock()
	if p.stopSig != "" {
		p.mu.Unlock()
		att.Close()
		<-copied
		res, _ := p.stoppedBeforeStart()
		return res
	}
	ctx, cancel = context.WithTimeout(context.Background(), callTimeout)
	_, err = cli.ContainerStart(ctx, created.ID, client.ContainerStartOptions{})
	cancel()
	p.running = err == nil
	p.mu.Unlock()
	if err != nil {
		att.Close()
		<-copied
		if len(p.hc.DeviceRequests) > 0 && strings.Contains(err.Error(), "device driver") {
			err = fmt.Errorf("%w (the job asks for GPUs: Docker needs the NVIDIA Container Toolkit for them)", err)
		}
		return p.fail(fmt.Errorf("start the container: %w", err))
	}

	wait := cli.ContainerWait(context.Background(), created.ID, client.ContainerWaitOptions{Condition: container.WaitConditionNotRunning})
	var code int64
	select {
	case w := <-wait.Result:
		if w.Error != nil && w.Error.Message != "" {
			endOutput()
			return p.fail(fmt.Errorf("wait for the container: %s", w.Error.Message))
		}
		code = w.StatusCode
	case err := <-wait.Error:
		endOutput()
		return p.fail(fmt.Errorf("wait for the container: %w", err))
	}
	p.mu.Lock()
	p.running = false
	sig := p.stopSig
	p.mu.Unlock()
	endOutput()

	res := Result{ExitCode: int(code)}
	if n, ok := signals[sig]; ok && res.ExitCode == 128+int(n) {
		res.Signal = sig
	}
	ctx, cancel = context.WithTimeout(context.Background(), callTimeout)
	info, err := cli.ContainerInspect(ctx, created.ID, client.ContainerInspectOptions{})
	cancel()
	if err == nil && info.Container.State != nil && info.Container.State.OOMKilled {
		res.Signal = "SIGKILL"
		p.note("the job went over its memory limit of %d MiB and was killed", p.hc.Memory>>20)
	}
	return res
}

// signals are the signals a process sends, by the names Result uses.
var signals = map[string]syscall.Signal{"SIGTERM": syscall.SIGTERM, "SIGKILL": syscall.SIGKILL}

// stoppedBeforeStart is the result of a job stopped before its container
// started, if it was.
func (p *dockerProcess) stoppedBeforeStart() (Result, bool) {
	p.mu.Lock()
	sig := p.stopSig
	p.mu.Unlock()
	if sig == "" {
		return Result{}, false
	}
	p.note("stopped before the container started")
	return Result{ExitCode: 128 + int(signals[sig]), Signal: sig}, true
}

// fail writes err to the output, where the job's author will look, and
// makes it the result.
func (p *dockerProcess) fail(err error) Result {
	p.note("%v", err)
	return Result{ExitCode: -1, Err: err}
}

func (p *dockerProcess) note(format string, args ...any) {
	_, _ = fmt.Fprintf(p.out, "dstack-runner: "+format+"\n", args...)
}

// remove removes the container, whatever its state.
func (p *dockerProcess) remove() {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	_, err := p.d.cli.ContainerRemove(ctx, p.id, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
	if err != nil && !cerrdefs.IsNotFound(err) {
		p.d.log.Warn("remove the job's container", "container", short(p.id), "err", err)
	}
}

func short(id string) string { return id[:min(12, len(id))] }

// ensureImage pulls the image when the engine does not have it.
func (p *dockerProcess) ensureImage() error {
	_, err := p.d.cli.ImageInspect(p.pullCtx, p.image)
	if err == nil {
		return nil
	}
	if !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("look for image %q: %w", p.image, err)
	}
	p.note("pulling image %s", p.image)
	if err := p.pull(); err != nil {
		return fmt.Errorf("image %q is not on this host and could not be pulled: %w", p.image, err)
	}
	return nil
}

func (p *dockerProcess) pull() error {
	rc, err := p.d.cli.ImagePull(p.pullCtx, p.image, client.ImagePullOptions{})
	if err != nil {
		return err
	}
	defer rc.Close()
	return copyPullProgress(rc, p.out)
}

// pullMessage is one line of the engine's pull progress.
type pullMessage struct {
	ID          string `json:"id"`
	Status      string `json:"status"`
	Progress    string `json:"progress"`
	Error       string `json:"error"`
	ErrorDetail *struct {
		Message string `json:"message"`
	} `json:"errorDetail"`
}

// copyPullProgress writes the steps of a pull ("abc123: Pull complete")
// to w, leaving out the progress bars, and returns the pull's error.
func copyPullProgress(r io.Reader, w io.Writer) error {
	dec := json.NewDecoder(r)
	for {
		var m pullMessage
		err := dec.Decode(&m)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read the pull's progress: %w", err)
		}
		switch {
		case m.ErrorDetail != nil && m.ErrorDetail.Message != "":
			return errors.New(m.ErrorDetail.Message)
		case m.Error != "":
			return errors.New(m.Error)
		case m.Status == "" || m.Progress != "":
			continue
		case m.ID != "":
			_, _ = fmt.Fprintf(w, "%s: %s\n", m.ID, m.Status)
		default:
			_, _ = fmt.Fprintln(w, m.Status)
		}
	}
}

func (p *dockerProcess) Wait() Result {
	<-p.done
	return p.result
}

// Terminate sends SIGTERM to the container's init, which hands it to the
// script. Before the container has started, it ends the job there.
func (p *dockerProcess) Terminate() error { return p.signal("SIGTERM") }

// Kill sends SIGKILL to the container. Before the container has started,
// it ends the job there.
func (p *dockerProcess) Kill() error { return p.signal("SIGKILL") }

func (p *dockerProcess) signal(sig string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ended {
		return nil
	}
	if p.stopSig != "SIGKILL" {
		p.stopSig = sig
	}
	if !p.running {
		p.cancelPull()
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	_, err := p.d.cli.ContainerKill(ctx, p.id, client.ContainerKillOptions{Signal: sig})
	// Not running, or gone: it has just ended.
	if err != nil && !cerrdefs.IsConflict(err) && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("send %s to container %s: %w", sig, short(p.id), err)
	}
	return nil
}

// outputWriter hands the job's output to the Spec's writer, one Write at a
// time. After the writer fails, it drops the output, so that the stream
// is still drained, and remembers the first error.
type outputWriter struct {
	w      io.Writer
	mu     sync.Mutex
	failed error
}

func (o *outputWriter) Write(b []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.failed == nil {
		if _, err := o.w.Write(b); err != nil {
			o.failed = fmt.Errorf("write output: %w", err)
		}
	}
	return len(b), nil
}

func (o *outputWriter) err() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.failed
}
