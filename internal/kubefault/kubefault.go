// Package kubefault is a fault-injecting reverse proxy in front of a real
// Kubernetes API server, for tests: a client pointed at the proxy talks to
// the real server, and a test's hook may answer a request itself instead
// (a 429 with Retry-After, a 500), forward it and then fail (the answer
// lost), and cut the watches that are open.
package kubefault

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
)

// Action is what the proxy does with one request.
type Action int

const (
	// Forward passes the request to the API server.
	Forward Action = iota
	// Throttle answers 429 Too Many Requests with Retry-After (1 second
	// unless Proxy.RetryAfter says), as API Priority and Fairness does.
	Throttle
	// Fail answers 500 Internal Server Error.
	Fail
	// Drop closes the connection without an answer; the request never
	// reaches the API server.
	Drop
	// LoseAnswer forwards the request, then closes the connection instead
	// of passing the answer on: the change is made, the client never hears.
	LoseAnswer
)

// Proxy is a running fault proxy.
type Proxy struct {
	// URL is the proxy's address, plain HTTP; the proxy authenticates to
	// the API server as the rest.Config it was made with.
	URL string
	// Config is a client configuration for the proxy (no credentials).
	Config *rest.Config

	srv   *httptest.Server
	proxy *httputil.ReverseProxy

	mu         sync.Mutex
	hook       func(r *http.Request) Action
	retryAfter int32
	watches    map[*watchConn]bool
	counts     map[Action]int
}

type watchConn struct{ cancel context.CancelFunc }

// New starts a proxy in front of the API server upstream reaches; it stops
// when the test ends.
func New(t interface {
	Cleanup(func())
	Fatal(...any)
}, upstream *rest.Config) *Proxy {
	rt, err := rest.TransportFor(upstream)
	if err != nil {
		t.Fatal(err)
	}
	target, err := url.Parse(upstream.Host)
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{watches: map[*watchConn]bool{}, counts: map[Action]int{}, retryAfter: 1}
	p.proxy = httputil.NewSingleHostReverseProxy(target)
	p.proxy.Transport = rt
	p.proxy.FlushInterval = -1
	p.proxy.ErrorHandler = func(w http.ResponseWriter, r *http.Request, err error) {
		if r.Context().Err() != nil {
			return
		}
		http.Error(w, err.Error(), http.StatusBadGateway)
	}
	p.srv = httptest.NewServer(http.HandlerFunc(p.serve))
	t.Cleanup(p.srv.Close)
	p.URL = p.srv.URL
	p.Config = &rest.Config{Host: p.srv.URL}
	return p
}

// SetHook sets the function that decides each request's fate; nil
// forwards everything.
func (p *Proxy) SetHook(h func(r *http.Request) Action) {
	p.mu.Lock()
	p.hook = h
	p.mu.Unlock()
}

// SetRetryAfter sets the seconds a Throttle answer asks the client to wait.
func (p *Proxy) SetRetryAfter(secs int32) {
	p.mu.Lock()
	p.retryAfter = secs
	p.mu.Unlock()
}

// Count is how many requests were given action a.
func (p *Proxy) Count(a Action) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.counts[a]
}

// CutWatches ends every watch open through the proxy, as a load balancer
// or an API server restart does; it returns how many it cut.
func (p *Proxy) CutWatches() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.watches)
	for w := range p.watches {
		w.cancel()
		delete(p.watches, w)
	}
	return n
}

// Watches is how many watches are open through the proxy.
func (p *Proxy) Watches() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.watches)
}

func (p *Proxy) serve(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	act := Forward
	if p.hook != nil {
		act = p.hook(r)
	}
	p.counts[act]++
	retry := p.retryAfter
	p.mu.Unlock()
	switch act {
	case Throttle:
		w.Header().Set("Retry-After", strconv.Itoa(int(retry)))
		writeStatus(w, http.StatusTooManyRequests, metav1.StatusReasonTooManyRequests,
			"Too many requests, please try again later.", &metav1.StatusDetails{RetryAfterSeconds: retry})
		return
	case Fail:
		writeStatus(w, http.StatusInternalServerError, metav1.StatusReasonInternalError, "injected internal error", nil)
		return
	case Drop:
		hijackClose(w)
		return
	case LoseAnswer:
		rec := httptest.NewRecorder()
		p.proxy.ServeHTTP(rec, r)
		hijackClose(w)
		return
	}
	if r.URL.Query().Get("watch") == "true" || r.URL.Query().Get("watch") == "1" {
		ctx, cancel := context.WithCancel(r.Context())
		wc := &watchConn{cancel: cancel}
		p.mu.Lock()
		p.watches[wc] = true
		p.mu.Unlock()
		defer func() {
			p.mu.Lock()
			delete(p.watches, wc)
			p.mu.Unlock()
			cancel()
		}()
		r = r.WithContext(ctx)
	}
	p.proxy.ServeHTTP(w, r)
}

func writeStatus(w http.ResponseWriter, code int32, reason metav1.StatusReason, msg string, details *metav1.StatusDetails) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(int(code))
	_ = json.NewEncoder(w).Encode(metav1.Status{
		TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
		Status:   metav1.StatusFailure, Code: code, Reason: reason, Message: msg, Details: details,
	})
}

func hijackClose(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(fmt.Sprintf("kubefault: %T cannot hijack", w))
	}
	conn, _, err := hj.Hijack()
	if err == nil {
		_ = conn.Close()
	}
}
