package kubernetes

import (
	"errors"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dstackai/dstack/backend"
	"github.com/dstackai/dstack/internal/kubefault"
	"github.com/dstackai/dstack/internal/kubetest"
)

// TestAPIFaults: through a proxy in front of the real API server, a 429
// with Retry-After is ErrThrottled carrying the delay, at once (client-go
// does not sit out the delay inside the call) and launching nothing; a 500
// is an error of no kind (outcome unknown); a 403 of an exceeded quota is
// ErrQuota.
func TestAPIFaults(t *testing.T) {
	t.Parallel()
	c := cluster(t)
	ns := namespace(t, c)
	p := kubefault.New(t, c.Config)
	b := newBackend(t, c, ns, func(cfg *Config) { cfg.Kubeconfig, cfg.REST, cfg.RESTName = nil, p.Config, kubetest.ContextName })
	server := "srv-" + randomHex(4)
	offer := offerOf(typeStd, false)
	if _, err := b.Offers(ctxT(t), kubetest.ContextName); err != nil {
		t.Fatal(err)
	}

	p.SetRetryAfter(3)
	p.SetHook(func(r *http.Request) kubefault.Action {
		if r.Method == http.MethodPost {
			return kubefault.Throttle
		}
		return kubefault.Forward
	})
	start := time.Now()
	_, err := b.Launch(ctxT(t), request(server, offer, 1))
	var be *backend.Error
	if !errors.Is(err, backend.ErrThrottled) || !errors.As(err, &be) || be.RetryAfter != 3*time.Second {
		t.Errorf("Launch when throttled = %v (%+v), want ErrThrottled after 3s", err, be)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("the throttled Launch took %s: client-go waited out the Retry-After", d)
	}

	p.SetHook(func(r *http.Request) kubefault.Action {
		if r.Method == http.MethodPost {
			return kubefault.Fail
		}
		return kubefault.Forward
	})
	_, err = b.Launch(ctxT(t), request(server, offer, 1))
	if err == nil || backend.ErrorKind(err) != "unknown" {
		t.Errorf("Launch on a 500 = %v (kind %s), want an error of unknown outcome", err, backend.ErrorKind(err))
	}
	p.SetHook(nil)
	if ins, err := b.List(ctxT(t), server); err != nil || len(ins) != 0 {
		t.Errorf("after the refusals, List = %+v, %v; want nothing launched", ins, err)
	}
}

// TestWatchSurvivesDisconnects: the Pod watch that tells the server of an
// eviction comes back after its connections are cut, and the eviction is
// told.
func TestWatchSurvivesDisconnects(t *testing.T) {
	t.Parallel()
	c := cluster(t)
	ns := namespace(t, c)
	p := kubefault.New(t, c.Config)
	var gone atomic.Int32
	b := newBackend(t, c, ns, func(cfg *Config) {
		cfg.Kubeconfig, cfg.REST, cfg.RESTName = nil, p.Config, kubetest.ContextName
		cfg.OnGone = func() { gone.Add(1) }
	})
	server := "srv-" + randomHex(4)
	got, err := b.Launch(ctxT(t), request(server, offerOf(typeStd, false), 1))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.List(ctxT(t), server); err != nil { // starts the watch
		t.Fatal(err)
	}
	for range 3 {
		poll(t, 30*time.Second, "a watch open through the proxy", func() bool { return p.Watches() > 0 })
		p.CutWatches()
	}
	poll(t, 30*time.Second, "a watch open again", func() bool { return p.Watches() > 0 })
	if gone.Load() != 0 {
		t.Fatalf("the watch told of %d departures before any", gone.Load())
	}
	c.EvictPod(t, ns, got[0].CloudID)
	poll(t, 30*time.Second, "the eviction told after the cuts", func() bool { return gone.Load() > 0 })
}
