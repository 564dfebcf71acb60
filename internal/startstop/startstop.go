// Package startstop is how the server, its loops, the autoscaler and the
// runner start and stop, with one meaning everywhere (as River's
// startstop):
//
//   - Start starts the service's goroutines and returns; a second call
//     returns the first's result, and a call after Stop fails.
//   - The service runs until the context given to Start ends or Stop is
//     called, whichever comes first: both stop it the same way.
//   - Stop ends the service's context and returns once every goroutine
//     the service started has returned and its stop hook ran. It is safe
//     to call twice, concurrently, and before Start (the service then
//     never starts).
//
// A service embeds (or holds) a Base and starts its goroutines with
// Base.Go; see Base.Start.
package startstop

import (
	"context"
	"errors"
	"sync"
)

// Service is something that runs in the background between Start and Stop.
type Service interface {
	// Start starts the service; it runs until ctx ends or Stop.
	Start(ctx context.Context) error
	// Stop stops the service and waits until it has stopped.
	Stop()
}

// ErrStopped is what Start returns after Stop.
var ErrStopped = errors.New("stopped before it started")

// state is where a Base is in its life.
type state int

const (
	stateNew     state = iota
	stateStarted       // Start was called
	stateStopped       // Stop was called before Start
)

// Base gives a service the start and stop of the package doc. Its zero
// value is ready to use; it must not be copied once used.
type Base struct {
	mu        sync.Mutex
	state     state
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	startDone chan struct{} // closed when the first Start returned
	stopped   chan struct{} // closed when stopped
	err       error         // the first Start's result, set before startDone closes
}

// init makes the channels; b.mu is held.
func (b *Base) init() {
	if b.stopped == nil {
		b.startDone = make(chan struct{})
		b.stopped = make(chan struct{})
	}
}

// Start starts the service once: start is called with the service's own
// context, which ends when ctx ends or Stop is called, and starts the
// service's goroutines with Go. Once that context has ended and every
// goroutine started with Go has returned, onStop (when not nil) runs,
// then Stopped is closed.
//
// When start fails, the service is stopped (onStop included) before
// Start returns start's error. A second call waits for the first and
// returns its result; a call after Stop returns ErrStopped.
func (b *Base) Start(ctx context.Context, start func(ctx context.Context) error, onStop func()) error {
	b.mu.Lock()
	b.init()
	switch b.state {
	case stateStopped:
		b.mu.Unlock()
		return ErrStopped
	case stateStarted:
		b.mu.Unlock()
		<-b.startDone
		return b.err
	}
	b.state = stateStarted
	ctx, cancel := context.WithCancel(ctx)
	b.cancel = cancel
	b.mu.Unlock()

	context.AfterFunc(ctx, func() {
		<-b.startDone // start adds no goroutine once it returned but from those it added
		b.wg.Wait()
		if onStop != nil {
			onStop()
		}
		close(b.stopped)
	})
	err := start(ctx)
	b.err = err
	close(b.startDone)
	if err != nil {
		cancel()
		<-b.stopped
	}
	return err
}

// Go runs f in a goroutine Stop waits for. Call it from the start function
// given to Start, or from a goroutine started with Go.
func (b *Base) Go(f func()) {
	b.wg.Go(f)
}

// Cancel ends the service's context as Stop does, without waiting: for a
// service that stops itself from one of its own goroutines, where Stop
// would wait for itself.
func (b *Base) Cancel() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.init()
	switch b.state {
	case stateNew:
		b.state = stateStopped
		close(b.stopped)
	case stateStarted:
		b.cancel()
	}
}

// Stop ends the service's context and waits until the service stopped:
// every goroutine started with Go returned and the stop hook ran.
func (b *Base) Stop() {
	b.Cancel()
	<-b.Stopped()
}

// Stopped is closed once the service has stopped (or was stopped before it
// started).
func (b *Base) Stopped() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.init()
	return b.stopped
}

// StartAll starts services in order. When one fails, those started are
// stopped, in reverse order, and its error is returned.
func StartAll(ctx context.Context, services ...Service) error {
	for i, s := range services {
		if err := s.Start(ctx); err != nil {
			StopAll(services[:i]...)
			return err
		}
	}
	return nil
}

// StopAll stops services in reverse order, each once the one after it has
// stopped.
func StopAll(services ...Service) {
	for i := len(services) - 1; i >= 0; i-- {
		services[i].Stop()
	}
}

// Loop is a service that runs one function in a goroutine until its
// context ends: the server's background loops.
type Loop struct {
	Base
	run func(ctx context.Context)
}

// NewLoop returns a Loop that runs run; run returns when its context ends.
func NewLoop(run func(ctx context.Context)) *Loop {
	return &Loop{run: run}
}

// Start starts the loop's goroutine.
func (l *Loop) Start(ctx context.Context) error {
	return l.Base.Start(ctx, func(ctx context.Context) error {
		l.Go(func() { l.run(ctx) })
		return nil
	}, nil)
}
