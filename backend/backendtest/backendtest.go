// Package backendtest is the contract suite every backend.Backend passes:
// what the interface's documentation promises, checked against a live
// backend over a cloud of its own (the local backend on the real Docker
// Engine, the AWS backend through the real SDK against ec2fake, the
// in-memory fake, the metrics decorator around the fake).
//
// A backend's test calls Run with a function that makes a Harness: the
// backend, a way to make it anew over the same cloud (a server restart),
// a cheap offer to launch and, when asked, a cloud with room for only a
// few instances of it. Where a backend cannot do what a part of the suite
// needs, its harness says so (a Harness field naming the reason) and the
// part is skipped with that reason, never passed silently.
//
// What the suite pins, by subtest:
//
//   - Offers: the offers of the harness's region are the backend's, of that
//     region, with CPUs, memory and a price, each key once, the harness's
//     offer among them; an unknown region is backend.ErrInvalid.
//   - TagsRoundTrip: Launch returns one instance per spec, each with a
//     cloud ID of its own, the offer's key and the request's tags (server,
//     limit, record, launch key), pending or running; List of the server
//     returns the same identities, List of another server none of them.
//   - IdempotentLaunch: the same request again, after the first or at the
//     same time, returns the first call's instances and launches nothing.
//   - PartialLaunch: with room for fewer than asked, Launch returns those
//     it could (distinct specs of the request) and no error; with no room
//     it returns nothing and an error backend.Unavailable reports, of kind
//     backend.ErrNoCapacity or ErrQuota, and launches nothing.
//   - TypedErrors: an instance type the region does not sell is
//     ErrUnsupported; a malformed request (no instances, a long key, no
//     server ID, a relative server URL, a record twice, no join token) is
//     ErrInvalid; each is a *backend.Error and launches nothing.
//   - IdempotentTerminate: Terminate of launched instances, again, with an
//     unknown ID, and with none succeeds, and List no longer shows them
//     pending or running.
//   - ListAfterRestart: a backend made anew lists what the old one
//     launched with the same identities, answers a repeated launch with the
//     same instances, and terminates them.
package backendtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dstackai/dstack/backend"
)

// Options are what a subtest asks of the harness it makes.
type Options struct {
	// Capacity, when positive, is how many more instances of the harness's
	// Offer the cloud has room for; zero means no limit the suite needs.
	Capacity int
}

// Harness is one backend under test, over a cloud of its own.
type Harness struct {
	// Backend is the backend under test.
	Backend backend.Backend
	// Restart returns a new backend over the same cloud, sharing none of
	// Backend's memory, as a server that restarts makes it.
	Restart func(t *testing.T) backend.Backend
	// Offer is what the suite launches: cheap, sold in its region at its
	// purchase type.
	Offer backend.Offer
	// UnsoldInstanceType is an instance type the Offer's region does not
	// sell; "dstack.unsold" when empty.
	UnsoldInstanceType string
	// UnknownRegion is a region the backend does not have; "nowhere-1"
	// when empty.
	UnknownRegion string
	// UnknownCloudID is a cloud ID shaped as the backend's that names no
	// instance; "i-0123456789abcdef0" when empty.
	UnknownCloudID string
	// ServerURL is what the launched instances are told to reach the
	// server at; nothing needs to listen there. "http://127.0.0.1:9"
	// when empty.
	ServerURL string
	// NoCapacityLimit, when set, says why the harness cannot honour
	// Options.Capacity: PartialLaunch is skipped with it.
	NoCapacityLimit string
}

// NewHarness makes a harness for one subtest; it registers its own
// cleanup with t.
type NewHarness func(t *testing.T, o Options) *Harness

// Run runs the contract suite against the backends newHarness makes.
func Run(t *testing.T, newHarness NewHarness) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, newHarness NewHarness)
	}{
		{"Offers", testOffers},
		{"TagsRoundTrip", testTagsRoundTrip},
		{"IdempotentLaunch", testIdempotentLaunch},
		{"PartialLaunch", testPartialLaunch},
		{"TypedErrors", testTypedErrors},
		{"IdempotentTerminate", testIdempotentTerminate},
		{"ListAfterRestart", testListAfterRestart},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.fn(t, newHarness)
		})
	}
}

// env is one subtest's harness and server identity.
type env struct {
	t        *testing.T
	h        *Harness
	serverID string
	seq      int
}

func setup(t *testing.T, newHarness NewHarness, o Options) *env {
	t.Helper()
	h := newHarness(t, o)
	if h == nil || h.Backend == nil {
		t.Fatal("the harness has no backend")
	}
	if h.UnsoldInstanceType == "" {
		h.UnsoldInstanceType = "dstack.unsold"
	}
	if h.UnknownRegion == "" {
		h.UnknownRegion = "nowhere-1"
	}
	if h.UnknownCloudID == "" {
		h.UnknownCloudID = "i-0123456789abcdef0"
	}
	if h.ServerURL == "" {
		h.ServerURL = "http://127.0.0.1:9"
	}
	e := &env{t: t, h: h, serverID: "bt-" + randomHex(6)}
	// Whatever a subtest leaves, its server's instances end with it.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		insts, err := h.Backend.List(ctx, e.serverID)
		if err != nil {
			t.Errorf("cleanup: list: %v", err)
			return
		}
		if err := h.Backend.Terminate(ctx, cloudIDs(insts)); err != nil {
			t.Errorf("cleanup: terminate: %v", err)
		}
	})
	return e
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

// request is a launch of n instances of the harness's offer.
func (e *env) request(n int) backend.LaunchRequest {
	e.seq++
	tag := randomHex(4)
	req := backend.LaunchRequest{
		Offer:          e.h.Offer,
		IdempotencyKey: fmt.Sprintf("bt-%s-%d", tag, e.seq),
		ServerID:       e.serverID,
		LimitID:        "limit-" + tag,
		ServerURL:      e.h.ServerURL,
	}
	for i := range n {
		req.Instances = append(req.Instances, backend.InstanceSpec{
			RecordID:  fmt.Sprintf("rec-%s-%d-%d", tag, e.seq, i),
			JoinToken: fmt.Sprintf("jt-%s-%d-%d", tag, e.seq, i),
		})
	}
	return req
}

func (e *env) launch(b backend.Backend, req backend.LaunchRequest) []backend.Instance {
	e.t.Helper()
	got, err := b.Launch(ctx(e.t), req)
	if err != nil {
		e.t.Fatalf("Launch(%s x%d): %v", req.Offer.Key(), len(req.Instances), err)
	}
	return got
}

// live lists the server's instances that are not gone, by cloud ID.
func (e *env) live(b backend.Backend) map[string]backend.Instance {
	e.t.Helper()
	insts, err := b.List(ctx(e.t), e.serverID)
	if err != nil {
		e.t.Fatalf("List: %v", err)
	}
	out := map[string]backend.Instance{}
	for _, in := range insts {
		if in.Tags.ServerID != e.serverID {
			e.t.Errorf("List(%s) returned another server's instance %+v", e.serverID, in)
		}
		if in.State == backend.StateGone {
			continue
		}
		if _, dup := out[in.CloudID]; dup {
			e.t.Errorf("List returned %s twice", in.CloudID)
		}
		out[in.CloudID] = in
	}
	return out
}

// checkLaunched checks what Launch returned for req: between min and
// len(req.Instances) instances, each a distinct spec with the request's
// tags and offer, pending or running.
func (e *env) checkLaunched(req backend.LaunchRequest, got []backend.Instance, least int) {
	e.t.Helper()
	if len(got) < least || len(got) > len(req.Instances) {
		e.t.Fatalf("Launch returned %d instances, want %d to %d: %+v", len(got), least, len(req.Instances), got)
	}
	ids, records := map[string]bool{}, map[string]bool{}
	for _, in := range got {
		if in.CloudID == "" || ids[in.CloudID] {
			e.t.Errorf("instance %+v: no cloud ID, or one another instance has", in)
		}
		ids[in.CloudID] = true
		if !slices.ContainsFunc(req.Instances, func(s backend.InstanceSpec) bool { return s.RecordID == in.Tags.RecordID }) || records[in.Tags.RecordID] {
			e.t.Errorf("instance %s has record %q: not a spec of the request, or one another instance has", in.CloudID, in.Tags.RecordID)
		}
		records[in.Tags.RecordID] = true
		want := backend.Tags{ServerID: req.ServerID, LimitID: req.LimitID, RecordID: in.Tags.RecordID, LaunchKey: req.IdempotencyKey}
		if in.Tags != want {
			e.t.Errorf("instance %s has tags %+v, want %+v", in.CloudID, in.Tags, want)
		}
		if in.Offer != req.Offer.Key() {
			e.t.Errorf("instance %s is of offer %s, want %s", in.CloudID, in.Offer, req.Offer.Key())
		}
		if in.State != backend.StatePending && in.State != backend.StateRunning {
			e.t.Errorf("instance %s is %s just after its launch, want pending or running", in.CloudID, in.State)
		}
		if in.LaunchedAt.IsZero() {
			e.t.Errorf("instance %s has no launch time", in.CloudID)
		}
	}
}

// checkListed checks that listed holds exactly the launched instances,
// with the same identities.
func (e *env) checkListed(listed map[string]backend.Instance, launched []backend.Instance) {
	e.t.Helper()
	if len(listed) != len(launched) {
		e.t.Errorf("List shows %d instances, want the %d launched: %+v", len(listed), len(launched), listed)
	}
	for _, in := range launched {
		l, ok := listed[in.CloudID]
		switch {
		case !ok:
			e.t.Errorf("List does not show launched instance %s", in.CloudID)
		case l.Tags != in.Tags || l.Offer != in.Offer:
			e.t.Errorf("List shows %s as %+v of %s, launched as %+v of %s", in.CloudID, l.Tags, l.Offer, in.Tags, in.Offer)
		}
	}
}

func cloudIDs(insts []backend.Instance) []string {
	out := make([]string, len(insts))
	for i, in := range insts {
		out[i] = in.CloudID
	}
	return out
}

func sortedIDs(insts []backend.Instance) []string {
	ids := cloudIDs(insts)
	slices.Sort(ids)
	return ids
}

// checkRefusal checks that err is a *backend.Error of kind and that
// nothing of the server's was launched.
func (e *env) checkRefusal(what string, err, kind error, before int) {
	e.t.Helper()
	var be *backend.Error
	switch {
	case err == nil:
		e.t.Errorf("%s: no error, want %v", what, kind)
		return
	case !errors.Is(err, kind):
		e.t.Errorf("%s: %v, want %v", what, err, kind)
	case !errors.As(err, &be):
		e.t.Errorf("%s: %v (%T) is no *backend.Error", what, err, err)
	case strings.TrimSpace(backend.Reason(err)) == "":
		e.t.Errorf("%s: %v says nothing", what, err)
	}
	if n := len(e.live(e.h.Backend)); n != before {
		e.t.Errorf("%s: %d instances live, want %d: the refusal launched something", what, n, before)
	}
}

func testOffers(t *testing.T, newHarness NewHarness) {
	e := setup(t, newHarness, Options{})
	b, region := e.h.Backend, e.h.Offer.Region
	if e.h.Offer.Backend != b.Name() {
		t.Fatalf("the harness's offer is of backend %q, the backend is %q", e.h.Offer.Backend, b.Name())
	}
	offers, err := b.Offers(ctx(t), region)
	if err != nil {
		t.Fatalf("Offers(%s): %v", region, err)
	}
	seen := map[backend.OfferKey]bool{}
	for _, o := range offers {
		if o.Backend != b.Name() || o.Region != region || o.InstanceType == "" {
			t.Errorf("offer %+v: want backend %s, region %s, an instance type", o, b.Name(), region)
		}
		if o.CPUs <= 0 || o.MemoryMiB <= 0 || o.PricePerHour < 0 {
			t.Errorf("offer %s: %d CPUs, %d MiB, %v per hour", o.Key(), o.CPUs, o.MemoryMiB, o.PricePerHour)
		}
		if seen[o.Key()] {
			t.Errorf("offer %s is listed twice", o.Key())
		}
		seen[o.Key()] = true
	}
	if !seen[e.h.Offer.Key()] {
		t.Errorf("Offers(%s) lacks the harness's offer %s", region, e.h.Offer.Key())
	}
	_, err = b.Offers(ctx(t), e.h.UnknownRegion)
	if !errors.Is(err, backend.ErrInvalid) {
		t.Errorf("Offers(%s) = %v, want ErrInvalid", e.h.UnknownRegion, err)
	}
}

func testTagsRoundTrip(t *testing.T, newHarness NewHarness) {
	e := setup(t, newHarness, Options{})
	req := e.request(2)
	got := e.launch(e.h.Backend, req)
	e.checkLaunched(req, got, len(req.Instances))
	e.checkListed(e.live(e.h.Backend), got)

	other, err := e.h.Backend.List(ctx(t), "bt-other-"+randomHex(6))
	if err != nil {
		t.Fatalf("List of another server: %v", err)
	}
	for _, in := range other {
		if slices.Contains(cloudIDs(got), in.CloudID) {
			t.Errorf("List of another server shows %+v", in)
		}
	}
}

func testIdempotentLaunch(t *testing.T, newHarness NewHarness) {
	e := setup(t, newHarness, Options{})
	t.Run("again", func(t *testing.T) {
		e := *e
		e.t = t
		req := e.request(2)
		first := e.launch(e.h.Backend, req)
		e.checkLaunched(req, first, len(req.Instances))
		again := e.launch(e.h.Backend, req)
		if !slices.Equal(sortedIDs(again), sortedIDs(first)) {
			t.Errorf("the repeated launch returned %v, the first %v", sortedIDs(again), sortedIDs(first))
		}
		e.checkLaunched(req, again, len(req.Instances))
		e.checkListed(e.live(e.h.Backend), first)
	})
	t.Run("concurrently", func(t *testing.T) {
		e := *e
		e.t = t
		e.serverID = "bt-" + randomHex(6)
		t.Cleanup(func() {
			c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			if insts, err := e.h.Backend.List(c, e.serverID); err == nil {
				_ = e.h.Backend.Terminate(c, cloudIDs(insts))
			}
		})
		req := e.request(2)
		const calls = 3
		var wg sync.WaitGroup
		results := make([][]backend.Instance, calls)
		errs := make([]error, calls)
		for i := range calls {
			wg.Go(func() { results[i], errs[i] = e.h.Backend.Launch(ctx(t), req) })
		}
		wg.Wait()
		for i := range calls {
			if errs[i] != nil {
				t.Fatalf("concurrent Launch %d: %v", i, errs[i])
			}
			e.checkLaunched(req, results[i], len(req.Instances))
			if !slices.Equal(sortedIDs(results[i]), sortedIDs(results[0])) {
				t.Errorf("concurrent launches with one key returned %v and %v", sortedIDs(results[0]), sortedIDs(results[i]))
			}
		}
		e.checkListed(e.live(e.h.Backend), results[0])
	})
}

func testPartialLaunch(t *testing.T, newHarness NewHarness) {
	e := setup(t, newHarness, Options{Capacity: 2})
	if e.h.NoCapacityLimit != "" {
		t.Skipf("the harness cannot limit capacity: %s", e.h.NoCapacityLimit)
	}
	req := e.request(3)
	got, err := e.h.Backend.Launch(ctx(t), req)
	if err != nil {
		t.Fatalf("Launch of 3 with room for 2: %v, want the 2 and no error", err)
	}
	if len(got) != 2 {
		t.Errorf("Launch of 3 with room for 2 returned %d instances", len(got))
	}
	e.checkLaunched(req, got, 1)
	e.checkListed(e.live(e.h.Backend), got)

	_, err = e.h.Backend.Launch(ctx(t), e.request(1))
	if !backend.Unavailable(err) || !(errors.Is(err, backend.ErrNoCapacity) || errors.Is(err, backend.ErrQuota)) {
		t.Errorf("Launch with no room = %v, want ErrNoCapacity or ErrQuota, which Unavailable reports", err)
	}
	kind := backend.ErrNoCapacity
	if errors.Is(err, backend.ErrQuota) {
		kind = backend.ErrQuota
	}
	e.checkRefusal("Launch with no room", err, kind, len(got))
}

func testTypedErrors(t *testing.T, newHarness NewHarness) {
	e := setup(t, newHarness, Options{})
	req := e.request(1)
	req.Offer.InstanceType = e.h.UnsoldInstanceType
	_, err := e.h.Backend.Launch(ctx(t), req)
	e.checkRefusal("Launch of an unsold type", err, backend.ErrUnsupported, 0)
	if !backend.Unavailable(err) {
		t.Errorf("Launch of an unsold type = %v: Unavailable says false", err)
	}

	bad := []struct {
		name   string
		change func(*backend.LaunchRequest)
	}{
		{"no instances", func(r *backend.LaunchRequest) { r.Instances = nil }},
		{"a key over 64 characters", func(r *backend.LaunchRequest) { r.IdempotencyKey = strings.Repeat("k", 65) }},
		{"no server ID", func(r *backend.LaunchRequest) { r.ServerID = "" }},
		{"a relative server URL", func(r *backend.LaunchRequest) { r.ServerURL = "127.0.0.1:3000" }},
		{"a record twice", func(r *backend.LaunchRequest) { r.Instances[1].RecordID = r.Instances[0].RecordID }},
		{"no join token", func(r *backend.LaunchRequest) { r.Instances[0].JoinToken = "" }},
	}
	for _, tt := range bad {
		req := e.request(2)
		tt.change(&req)
		_, err := e.h.Backend.Launch(ctx(t), req)
		e.checkRefusal("Launch with "+tt.name, err, backend.ErrInvalid, 0)
		if backend.Unavailable(err) {
			t.Errorf("Launch with %s = %v: Unavailable says the offer cannot be had", tt.name, err)
		}
	}
}

func testIdempotentTerminate(t *testing.T, newHarness NewHarness) {
	e := setup(t, newHarness, Options{})
	req := e.request(2)
	got := e.launch(e.h.Backend, req)
	e.checkLaunched(req, got, len(req.Instances))
	ids := append(cloudIDs(got), e.h.UnknownCloudID)
	for i := range 2 {
		if err := e.h.Backend.Terminate(ctx(t), ids); err != nil {
			t.Fatalf("Terminate %d of %v: %v", i+1, ids, err)
		}
	}
	if err := e.h.Backend.Terminate(ctx(t), nil); err != nil {
		t.Errorf("Terminate of nothing: %v", err)
	}
	if err := e.h.Backend.Terminate(ctx(t), []string{e.h.UnknownCloudID}); err != nil {
		t.Errorf("Terminate of an unknown ID: %v", err)
	}
	insts, err := e.h.Backend.List(ctx(t), e.serverID)
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range insts {
		if in.State == backend.StatePending || in.State == backend.StateRunning {
			t.Errorf("after Terminate, List shows %s %s", in.CloudID, in.State)
		}
	}
}

func testListAfterRestart(t *testing.T, newHarness NewHarness) {
	e := setup(t, newHarness, Options{})
	if e.h.Restart == nil {
		t.Fatal("the harness cannot restart its backend")
	}
	req := e.request(2)
	got := e.launch(e.h.Backend, req)
	e.checkLaunched(req, got, len(req.Instances))

	b := e.h.Restart(t)
	if w, ok := b.(backend.RegionWatcher); ok {
		// As the controller does before every List.
		w.WatchRegions(req.Offer.Region)
	}
	e.checkListed(e.live(b), got)
	again, err := b.Launch(ctx(t), req)
	if err != nil {
		t.Fatalf("the restarted backend's repeated launch: %v", err)
	}
	if !slices.Equal(sortedIDs(again), sortedIDs(got)) {
		t.Errorf("the restarted backend's repeated launch returned %v, the first %v", sortedIDs(again), sortedIDs(got))
	}
	e.checkListed(e.live(b), got)
	if err := b.Terminate(ctx(t), cloudIDs(got)); err != nil {
		t.Fatalf("the restarted backend's Terminate: %v", err)
	}
	for _, in := range e.live(e.h.Backend) {
		if in.State == backend.StatePending || in.State == backend.StateRunning {
			t.Errorf("after the restarted backend's Terminate, the first lists %s %s", in.CloudID, in.State)
		}
	}
}
