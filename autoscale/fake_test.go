package autoscale_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/dstackai/dstack/backend"
)

// fakeRegion is the fake cloud's only region.
const fakeRegion = "r1"

// fakeOffers is what the fake cloud sells.
var fakeOffers = []backend.Offer{
	{Backend: "fake", Region: fakeRegion, InstanceType: "f.small", CPUs: 1, MemoryMiB: 1 << 10, PricePerHour: 0.01},
	{Backend: "fake", Region: fakeRegion, InstanceType: "f.small", Spot: true, CPUs: 1, MemoryMiB: 1 << 10, PricePerHour: 0.003},
	{Backend: "fake", Region: fakeRegion, InstanceType: "f.large", CPUs: 4, MemoryMiB: 8 << 10, PricePerHour: 0.04},
	{Backend: "fake", Region: fakeRegion, InstanceType: "f.large", Spot: true, CPUs: 4, MemoryMiB: 8 << 10, PricePerHour: 0.012},
}

// fakeCloud is an in-memory backend.Backend: launches are idempotent by key,
// instances carry their tags, Terminate is idempotent. Hooks inject faults.
type fakeCloud struct {
	now func() time.Time

	mu        sync.Mutex
	seq       int
	insts     map[string]*backend.Instance // by cloud ID
	byKey     map[string][]string          // launch key → cloud IDs
	tokens    map[string]string            // record ID → join token
	launches  []backend.LaunchRequest      // every call, in order
	terminate int                          // Terminate calls
	// refuse, when set, makes Launch of the offer fail with its error,
	// launching nothing.
	refuse map[backend.OfferKey]error
	// beforeLaunch runs before anything is launched; an error is returned
	// as it is.
	beforeLaunch func(ctx context.Context, req backend.LaunchRequest) error
	// afterLaunch runs once the instances exist; an error is returned
	// instead of them (a call that timed out after the cloud acted).
	afterLaunch func(ctx context.Context, req backend.LaunchRequest) error
	// dup makes every Launch call the cloud twice with the same request.
	dup bool
	// repeat makes the next launch of several give its second instance
	// the record of the first, as a backend that trusted an endpoint's
	// repeated launch index would.
	repeat bool
	// launched is signalled (without blocking) at every Launch call.
	launched chan struct{}
}

func newFakeCloud(now func() time.Time) *fakeCloud {
	return &fakeCloud{now: now, insts: map[string]*backend.Instance{}, byKey: map[string][]string{},
		tokens: map[string]string{}, refuse: map[backend.OfferKey]error{}}
}

func (f *fakeCloud) Name() string { return "fake" }

func (f *fakeCloud) Offers(_ context.Context, region string) ([]backend.Offer, error) {
	if region != fakeRegion {
		return nil, backend.Errorf(backend.ErrInvalid, "offers", "InvalidRegion", "no region %s", region)
	}
	return slices.Clone(fakeOffers), nil
}

func (f *fakeCloud) Launch(ctx context.Context, req backend.LaunchRequest) ([]backend.Instance, error) {
	f.mu.Lock()
	dup := f.dup
	f.mu.Unlock()
	if dup {
		if _, err := f.launch(ctx, req); err != nil {
			return nil, err
		}
	}
	return f.launch(ctx, req)
}

func (f *fakeCloud) launch(ctx context.Context, req backend.LaunchRequest) ([]backend.Instance, error) {
	f.mu.Lock()
	f.launches = append(f.launches, req)
	before, after, refuse := f.beforeLaunch, f.afterLaunch, f.refuse[req.Offer.Key()]
	if f.launched != nil {
		select {
		case f.launched <- struct{}{}:
		default:
		}
	}
	f.mu.Unlock()
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
		for i, spec := range req.Instances {
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
		out = append(out, *f.insts[id])
	}
	f.mu.Unlock()
	if after != nil {
		if err := after(ctx, req); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (f *fakeCloud) Terminate(_ context.Context, ids []string) error {
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

func (f *fakeCloud) List(_ context.Context, serverID string) ([]backend.Instance, error) {
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

// live returns the instances not gone.
func (f *fakeCloud) live() []backend.Instance {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []backend.Instance
	for _, in := range f.insts {
		if in.State != backend.StateGone {
			out = append(out, *in)
		}
	}
	return out
}

// vanish makes the cloud forget an instance, as when it is reclaimed.
func (f *fakeCloud) vanish(cloudID string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.insts, cloudID)
}

// vanishKey makes the cloud forget the instances of one launch.
func (f *fakeCloud) vanishKey(key string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, id := range f.byKey[key] {
		delete(f.insts, id)
	}
}

// plant launches an instance the server never asked for, with its tags.
func (f *fakeCloud) plant(serverID string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq++
	id := fmt.Sprintf("i-%04d", f.seq)
	f.insts[id] = &backend.Instance{CloudID: id, State: backend.StateRunning, LaunchedAt: f.now(),
		Offer: fakeOffers[0].Key(), Tags: backend.Tags{ServerID: serverID, RecordID: "unknown-" + id}}
	return id
}

// plantAs launches an instance the server never asked for, tagged as the
// server's instance of limitID and recordID.
func (f *fakeCloud) plantAs(serverID, limitID, recordID string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq++
	id := fmt.Sprintf("i-%04d", f.seq)
	f.insts[id] = &backend.Instance{CloudID: id, State: backend.StateRunning, LaunchedAt: f.now(),
		Offer: fakeOffers[0].Key(), Tags: backend.Tags{ServerID: serverID, LimitID: limitID, RecordID: recordID}}
	return id
}

func (f *fakeCloud) token(recordID string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.tokens[recordID]
}

func (f *fakeCloud) launchCalls() []backend.LaunchRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.launches)
}

func (f *fakeCloud) set(fn func(f *fakeCloud)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}
