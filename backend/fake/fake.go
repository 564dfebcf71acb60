// Package fake is an in-memory backend.Backend for tests of what drives a
// backend (the autoscaler, the server): launches are idempotent by key,
// instances carry their tags, Terminate is idempotent, capacity can be
// limited, and hooks inject the faults a real cloud has (refusals, calls
// that time out after the cloud acted, repeated calls).
//
// It passes the backend contract suite (backend/backendtest), so what a
// test learns against it holds for the real backends.
package fake

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/dstackai/dstack/backend"
)

// Name is the fake backend's name, in offers and limits.
const Name = "fake"

// Region is the fake cloud's only region.
const Region = "r1"

// Catalogue is what the fake cloud sells.
var Catalogue = []backend.Offer{
	{Backend: Name, Region: Region, InstanceType: "f.small", CPUs: 1, MemoryMiB: 1 << 10, PricePerHour: 0.01},
	{Backend: Name, Region: Region, InstanceType: "f.small", Spot: true, CPUs: 1, MemoryMiB: 1 << 10, PricePerHour: 0.003},
	{Backend: Name, Region: Region, InstanceType: "f.large", CPUs: 4, MemoryMiB: 8 << 10, PricePerHour: 0.04},
	{Backend: Name, Region: Region, InstanceType: "f.large", Spot: true, CPUs: 4, MemoryMiB: 8 << 10, PricePerHour: 0.012},
}

// LaunchHook runs inside Launch; see Backend.SetBeforeLaunch and
// SetAfterLaunch.
type LaunchHook func(ctx context.Context, req backend.LaunchRequest) error

// Backend is a handle on an in-memory cloud. Create it with New; Restarted
// gives another handle on the same cloud. It is safe for concurrent use.
type Backend struct {
	c *cloud
}

// cloud is the state every handle shares.
type cloud struct {
	now func() time.Time

	mu        sync.Mutex
	seq       int
	insts     map[string]*backend.Instance // by cloud ID
	byKey     map[string][]string          // launch key → cloud IDs
	tokens    map[string]string            // record ID → join token
	launches  []backend.LaunchRequest      // every call, in order
	terminate int                          // Terminate calls
	capacity  map[backend.OfferKey]int     // room left, where limited
	refuse    map[backend.OfferKey]error
	before    LaunchHook
	after     LaunchHook
	dup       bool
	repeat    bool
	notify    chan<- struct{}
}

var _ backend.Backend = (*Backend)(nil)

// New returns a backend over an empty cloud whose clock is now (time.Now
// when nil).
func New(now func() time.Time) *Backend {
	if now == nil {
		now = time.Now
	}
	return &Backend{c: &cloud{now: now, insts: map[string]*backend.Instance{}, byKey: map[string][]string{},
		tokens: map[string]string{}, capacity: map[backend.OfferKey]int{}, refuse: map[backend.OfferKey]error{}}}
}

// Restarted returns a new handle on the same cloud, as a server that
// restarts makes its backend anew. The fake keeps nothing per handle, so
// it differs from b only in identity.
func (b *Backend) Restarted() *Backend { return &Backend{c: b.c} }

// Name is "fake".
func (b *Backend) Name() string { return Name }

// Offers lists the Catalogue; a region other than Region is
// backend.ErrInvalid.
func (b *Backend) Offers(_ context.Context, region string) ([]backend.Offer, error) {
	if region != Region {
		return nil, backend.Errorf(backend.ErrInvalid, "offers", "InvalidRegion", "no region %s", region)
	}
	return slices.Clone(Catalogue), nil
}

// Launch launches the instances of req (see backend.Backend), each pending
// until the test says otherwise. With SetDuplicate it calls the cloud twice
// with the same request, as a retrying client does.
func (b *Backend) Launch(ctx context.Context, req backend.LaunchRequest) ([]backend.Instance, error) {
	b.c.mu.Lock()
	dup := b.c.dup
	b.c.mu.Unlock()
	if dup {
		if _, err := b.launch(ctx, req); err != nil {
			return nil, err
		}
	}
	return b.launch(ctx, req)
}

func (b *Backend) launch(ctx context.Context, req backend.LaunchRequest) ([]backend.Instance, error) {
	f := b.c
	f.mu.Lock()
	f.launches = append(f.launches, req)
	before, after, refuse := f.before, f.after, f.refuse[req.Offer.Key()]
	if f.notify != nil {
		select {
		case f.notify <- struct{}{}:
		default:
		}
	}
	f.mu.Unlock()
	if err := req.Validate(); err != nil {
		return nil, err
	}
	if before != nil {
		if err := before(ctx, req); err != nil {
			return nil, err
		}
	}
	if refuse != nil {
		return nil, refuse
	}
	f.mu.Lock()
	ids, ok := f.byKey[req.IdempotencyKey]
	if !ok {
		if err := sold(req.Offer.Key()); err != nil {
			f.mu.Unlock()
			return nil, err
		}
		n := len(req.Instances)
		if room, limited := f.capacity[req.Offer.Key()]; limited {
			if room == 0 {
				f.mu.Unlock()
				return nil, backend.Errorf(backend.ErrNoCapacity, "launch", "InsufficientCapacity", "no capacity left for %s", req.Offer.Key())
			}
			n = min(n, room)
			f.capacity[req.Offer.Key()] = room - n
		}
		for i, spec := range req.Instances[:n] {
			if i == 1 && f.repeat {
				f.repeat = false
				spec = req.Instances[0]
			}
			f.seq++
			id := fmt.Sprintf("i-%04d", f.seq)
			f.insts[id] = &backend.Instance{
				CloudID: id, Offer: req.Offer.Key(), State: backend.StatePending, LaunchedAt: f.now(),
				Tags: backend.Tags{ServerID: req.ServerID, LimitID: req.LimitID, RecordID: spec.RecordID, LaunchKey: req.IdempotencyKey},
			}
			f.tokens[spec.RecordID] = spec.JoinToken
			ids = append(ids, id)
		}
		f.byKey[req.IdempotencyKey] = ids
	}
	var out []backend.Instance
	for _, id := range ids {
		if in := f.insts[id]; in != nil {
			out = append(out, *in)
		}
	}
	f.mu.Unlock()
	if after != nil {
		if err := after(ctx, req); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// sold checks that the Catalogue has k.
func sold(k backend.OfferKey) error {
	if k.Backend != Name {
		return backend.Errorf(backend.ErrInvalid, "launch", "WrongBackend", "offer %s is not the fake backend's", k)
	}
	if !slices.ContainsFunc(Catalogue, func(o backend.Offer) bool { return o.Key() == k }) {
		return backend.Errorf(backend.ErrUnsupported, "launch", "Unsupported", "the fake cloud does not sell %s", k)
	}
	return nil
}

// Terminate marks the instances gone; unknown IDs are no error.
func (b *Backend) Terminate(_ context.Context, ids []string) error {
	f := b.c
	f.mu.Lock()
	defer f.mu.Unlock()
	f.terminate++
	if f.dup {
		f.terminate++ // the second call finds them gone already
	}
	for _, id := range ids {
		if in := f.insts[id]; in != nil {
			in.State = backend.StateGone
		}
	}
	return nil
}

// List returns the server's instances not gone.
func (b *Backend) List(_ context.Context, serverID string) ([]backend.Instance, error) {
	if serverID == "" {
		return nil, backend.Errorf(backend.ErrInvalid, "list", "InvalidRequest", "no server ID")
	}
	f := b.c
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []backend.Instance
	for _, in := range f.insts {
		if in.Tags.ServerID == serverID && in.State != backend.StateGone {
			out = append(out, *in)
		}
	}
	return out, nil
}

// SetCapacity lets at most n more instances of offer k be launched: a
// launch beyond it launches what fits, or nothing with
// backend.ErrNoCapacity. n < 0 removes the limit.
func (b *Backend) SetCapacity(k backend.OfferKey, n int) {
	b.c.mu.Lock()
	defer b.c.mu.Unlock()
	if n < 0 {
		delete(b.c.capacity, k)
		return
	}
	b.c.capacity[k] = n
}

// Refuse makes every Launch of offer k fail with err, launching nothing;
// a nil err lifts the refusal.
func (b *Backend) Refuse(k backend.OfferKey, err error) {
	b.c.mu.Lock()
	defer b.c.mu.Unlock()
	if err == nil {
		delete(b.c.refuse, k)
		return
	}
	b.c.refuse[k] = err
}

// SetBeforeLaunch makes fn run at every Launch before anything is
// launched; its error is returned as it is. nil removes the hook.
func (b *Backend) SetBeforeLaunch(fn LaunchHook) {
	b.c.mu.Lock()
	defer b.c.mu.Unlock()
	b.c.before = fn
}

// SetAfterLaunch makes fn run at every Launch once the instances exist;
// its error is returned instead of them (a call that timed out after the
// cloud acted). nil removes the hook.
func (b *Backend) SetAfterLaunch(fn LaunchHook) {
	b.c.mu.Lock()
	defer b.c.mu.Unlock()
	b.c.after = fn
}

// SetDuplicate makes every Launch call the cloud twice with the same
// request, and every Terminate count twice.
func (b *Backend) SetDuplicate(on bool) {
	b.c.mu.Lock()
	defer b.c.mu.Unlock()
	b.c.dup = on
}

// RepeatRecordOnce makes the next launch of several give its second
// instance the record of the first, as a backend that trusted an
// endpoint's repeated launch index would.
func (b *Backend) RepeatRecordOnce() {
	b.c.mu.Lock()
	defer b.c.mu.Unlock()
	b.c.repeat = true
}

// NotifyLaunch makes every Launch call signal ch without blocking.
func (b *Backend) NotifyLaunch(ch chan<- struct{}) {
	b.c.mu.Lock()
	defer b.c.mu.Unlock()
	b.c.notify = ch
}

// Live returns every instance not gone, of any server.
func (b *Backend) Live() []backend.Instance {
	b.c.mu.Lock()
	defer b.c.mu.Unlock()
	var out []backend.Instance
	for _, in := range b.c.insts {
		if in.State != backend.StateGone {
			out = append(out, *in)
		}
	}
	return out
}

// Vanish makes the cloud forget an instance, as when it is reclaimed.
func (b *Backend) Vanish(cloudID string) {
	b.c.mu.Lock()
	defer b.c.mu.Unlock()
	delete(b.c.insts, cloudID)
}

// VanishLaunch makes the cloud forget the instances of one launch.
func (b *Backend) VanishLaunch(key string) {
	b.c.mu.Lock()
	defer b.c.mu.Unlock()
	for _, id := range b.c.byKey[key] {
		delete(b.c.insts, id)
	}
}

// Plant starts a running instance the server never asked for, tagged with
// serverID and a record no server has.
func (b *Backend) Plant(serverID string) string {
	return b.PlantAs(serverID, "", "")
}

// PlantAs starts a running instance the server never asked for, tagged as
// the server's instance of limitID and recordID ("unknown-<cloud ID>" when
// empty).
func (b *Backend) PlantAs(serverID, limitID, recordID string) string {
	b.c.mu.Lock()
	defer b.c.mu.Unlock()
	b.c.seq++
	id := fmt.Sprintf("i-%04d", b.c.seq)
	if recordID == "" {
		recordID = "unknown-" + id
	}
	b.c.insts[id] = &backend.Instance{CloudID: id, State: backend.StateRunning, LaunchedAt: b.c.now(),
		Offer: Catalogue[0].Key(), Tags: backend.Tags{ServerID: serverID, LimitID: limitID, RecordID: recordID}}
	return id
}

// Token is the join token the instance of recordID was launched with.
func (b *Backend) Token(recordID string) string {
	b.c.mu.Lock()
	defer b.c.mu.Unlock()
	return b.c.tokens[recordID]
}

// LaunchCalls are the Launch requests the cloud received, in order.
func (b *Backend) LaunchCalls() []backend.LaunchRequest {
	b.c.mu.Lock()
	defer b.c.mu.Unlock()
	return slices.Clone(b.c.launches)
}

// TerminateCalls is how many Terminate calls the cloud received.
func (b *Backend) TerminateCalls() int {
	b.c.mu.Lock()
	defer b.c.mu.Unlock()
	return b.c.terminate
}
