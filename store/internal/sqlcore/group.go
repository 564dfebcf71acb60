package sqlcore

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/dstackai/dstack/store"
)

// group commits the calls of one kind that arrive together in one
// transaction (group commit): while a transaction of the group runs, new
// calls queue, and the next transaction takes them all, up to max. A call
// that arrives when none runs starts one at once, so a lone call waits for
// nobody.
//
// The caller whose call starts a transaction leads it; when it is done it
// hands the lead to the first queued call, which takes the queue. No
// goroutine outlives a call.
//
// run does the calls in q and returns one outcome each; an outcome's error
// (store.ErrNotFound, store.ErrLeaseLost...) fails that call only. An error
// returned by run, or by the commit, fails the transaction: then each call is
// done again in a transaction of its own, so that one bad call fails alone,
// unless the database is unavailable, which fails them all at once.
type group[Req, Res any] struct {
	db  DB
	max int
	run func(ctx context.Context, q Querier, reqs []Req) ([]outcome[Res], error)

	mu   sync.Mutex
	busy bool
	// waiting are the queued calls, oldest first, some of them given up
	// (groupCall.gone). With thousands of runners claiming as jobs arrive
	// the queue is thousands long: a call is taken off its head, or marked
	// gone where it stands, never searched for or moved.
	waiting []*groupCall[Req, Res]
}

type outcome[Res any] struct {
	res Res
	err error
}

type groupCall[Req, Res any] struct {
	req Req
	out outcome[Res]
	// signal gets false when out is set, true when the call is to lead the
	// next transaction.
	signal chan bool
	// queued: the call is in group.waiting; gone: its caller gave up on it
	// there. Both are guarded by group.mu.
	queued, gone bool
}

// do runs req in the group's next transaction. Once the call is taken into a
// transaction it waits for its outcome even if ctx ends, so that a call
// never reports a failure for a change that was committed.
func (g *group[Req, Res]) do(ctx context.Context, req Req) (Res, error) {
	c := &groupCall[Req, Res]{req: req, signal: make(chan bool, 1)}
	g.mu.Lock()
	if !g.busy {
		g.busy = true
		g.mu.Unlock()
		g.gather()
	} else {
		c.queued = true
		g.waiting = append(g.waiting, c)
		g.mu.Unlock()
		var lead bool
		select {
		case lead = <-c.signal:
		case <-ctx.Done():
			g.mu.Lock()
			if c.queued {
				c.gone = true
				g.mu.Unlock()
				var zero Res
				return zero, ctx.Err()
			}
			g.mu.Unlock()
			lead = <-c.signal
		}
		if !lead {
			return c.out.res, c.out.err
		}
	}
	g.lead(ctx, c)
	return c.out.res, c.out.err
}

// gather lets the calls made together with the one that found the group
// idle queue behind it before it leads: while other goroutines run, it
// yields the processor, until a yield adds no call to the queue, the queue
// fills a transaction or maxGather has passed. A lone call yields once.
//
// Calls come in bursts: the callers of one transaction of a group learn
// their outcome together and go on to their next call together, to another
// group, often idle at that moment. Without the gathering, the first of
// them would commit alone and the rest would wait for it to queue in the
// next transaction, a transaction each burst spent on one call.
func (g *group[Req, Res]) gather() {
	start, n := time.Now(), 0
	for time.Since(start) < maxGather {
		runtime.Gosched()
		g.mu.Lock()
		m := len(g.waiting)
		g.mu.Unlock()
		if m == n || m >= g.max-1 {
			return
		}
		n = m
	}
}

// maxGather bounds how long gather waits for a burst of calls.
const maxGather = 500 * time.Microsecond

// lead runs c and the calls queued behind it, then hands the lead on. A
// panic fails the calls of the transaction and still hands the lead on, so
// that the calls queued behind do not wait forever.
func (g *group[Req, Res]) lead(ctx context.Context, c *groupCall[Req, Res]) {
	calls := []*groupCall[Req, Res]{c}
	g.mu.Lock()
	for len(calls) < g.max {
		o := g.next()
		if o == nil {
			break
		}
		calls = append(calls, o)
	}
	g.mu.Unlock()

	defer func() {
		if p := recover(); p != nil {
			for _, o := range calls {
				o.out = outcome[Res]{err: fmt.Errorf("internal error in a shared transaction: %v", p)}
			}
			g.finish(calls)
			panic(p)
		}
		g.finish(calls)
	}()
	g.exec(context.WithoutCancel(ctx), calls)
}

// finish gives the calls of a transaction, but its leader, their outcome,
// and hands the lead to the first queued call.
func (g *group[Req, Res]) finish(calls []*groupCall[Req, Res]) {
	for _, o := range calls[1:] {
		o.signal <- false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if next := g.next(); next != nil {
		next.signal <- true
	} else {
		g.busy = false
	}
}

// next takes the oldest call not given up off the queue, nil when there is
// none. g.mu is held.
func (g *group[Req, Res]) next() *groupCall[Req, Res] {
	for len(g.waiting) > 0 {
		c := g.waiting[0]
		g.waiting[0] = nil // the queue keeps no reference past its head
		g.waiting = g.waiting[1:]
		c.queued = false
		if !c.gone {
			return c
		}
	}
	g.waiting = nil
	return nil
}

// exec sets the outcome of each call.
func (g *group[Req, Res]) exec(ctx context.Context, calls []*groupCall[Req, Res]) {
	reqs := make([]Req, len(calls))
	for i, c := range calls {
		reqs[i] = c.req
	}
	outs, err := g.tx(ctx, reqs)
	if err == nil {
		for i, c := range calls {
			c.out = outs[i]
		}
		return
	}
	if len(calls) == 1 || errors.Is(err, store.ErrUnavailable) {
		for _, c := range calls {
			c.out.err = err
		}
		return
	}
	for _, c := range calls {
		outs, err := g.tx(ctx, []Req{c.req})
		if err != nil {
			c.out.err = err
		} else {
			c.out = outs[0]
		}
	}
}

func (g *group[Req, Res]) tx(ctx context.Context, reqs []Req) ([]outcome[Res], error) {
	var outs []outcome[Res]
	err := g.db.Tx(ctx, func(q Querier) error {
		var err error
		outs, err = g.run(ctx, q, reqs)
		return err
	})
	return outs, err
}
