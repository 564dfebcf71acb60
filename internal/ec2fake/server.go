// Package ec2fake is an in-process Amazon EC2: an HTTP server that speaks
// EC2's query protocol (form-encoded POST, Action=...&Version=2016-11-15,
// XML answers, EC2's XML error envelope) well enough that the real
// aws-sdk-go-v2 EC2 client, pointed at it through BaseEndpoint, can discover
// regions, zones, instance types, spot prices, images and the default
// network, manage security groups, and launch, list, tag and terminate
// on-demand and spot instances.
//
// Every launched instance gets its own instance metadata service (IMDSv2)
// listener, so code that runs "on" the instance (for example a container
// started by Options.Boot) reads its instance ID, tags, user data and spot
// interruption notice the way it would on EC2.
//
// Tests drive the cloud's misbehaviour through faults (Fail, Throttle,
// Delay, LoseResponse, SetCapacity, RemoveAction, RepeatLaunchIndex,
// StrayInstance) and the instance's life through
// Interrupt and Kill, and inspect what the client did with Instances, Calls,
// SecurityGroups and SpotRequests. Time comes from Options.Now, so tests can
// move a fake clock instead of sleeping.
//
// Instance states move as on EC2, but lazily: pending → running after
// Options.BootDelay (or right after the RunInstances answer when it is 0),
// shutting-down → terminated after Options.ShutdownDelay (or right after the
// TerminateInstances answer), and a spot interruption at its announced time.
// Transitions are applied whenever the server is asked anything and by a
// background tick, always against Options.Now.
//
// Requests are authenticated with real SigV4 verification when
// Options.Credentials is set; the region of a request is the one named in its
// credential scope. Clock skew between the signature and the server is not
// checked, so a fake clock does not break signing.
package ec2fake

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"
)

// Options configure a fake EC2. The zero value is a usable cloud with three
// regions, the default catalogue, real time and no authentication.
type Options struct {
	// Credentials are the access key ID → secret access key pairs accepted.
	// Requests are checked with real SigV4 verification: an unknown key is
	// refused with 401 AuthFailure, a bad signature with 403
	// SignatureDoesNotMatch. Empty: any request is accepted, signed or not.
	Credentials map[string]string
	// Regions are the regions that exist (and are enabled); the default is
	// us-east-1, eu-west-1 and us-west-2. Each has three availability zones.
	Regions []string
	// Catalog is what the regions sell; the default is DefaultCatalog().
	Catalog []InstanceType
	// Now is the cloud's clock; nil means time.Now.
	Now func() time.Time
	// BootDelay is how long an instance stays pending. 0: it is running as
	// soon as the RunInstances answer has been sent.
	BootDelay time.Duration
	// ShutdownDelay is how long an instance stays shutting-down. 0: it is
	// terminated as soon as the TerminateInstances answer has been sent.
	ShutdownDelay time.Duration
	// SpotInstanceLimit is the number of spot instances that may be alive
	// at once per region (MaxSpotInstanceCountExceeded beyond it); 0 means 20.
	SpotInstanceLimit int
	// OnDemandVCPULimit is the number of on-demand vCPUs that may be alive
	// at once per region (VcpuLimitExceeded beyond it); 0 means no limit.
	OnDemandVCPULimit int
	// IMDSListen is the address the per-instance metadata servers listen on,
	// default "127.0.0.1:0". Give a docker bridge IP so that containers can
	// reach them; keep port 0, since each instance listens on its own port.
	IMDSListen string
	// Boot, if set, is called in its own goroutine once per instance launched
	// by RunInstances, e.g. to start a container that runs its user data.
	Boot func(in Instance, imdsURL string)
	// Terminated, if set, is called in its own goroutine once per instance
	// when it reaches the terminated state, e.g. to stop what Boot started.
	Terminated func(in Instance)
	// Logf, if set, receives one line per request, e.g. t.Logf.
	Logf func(format string, args ...any)
}

// Account is the AWS account ID the fake answers as.
const Account = "123456789012"

// Instance is a snapshot of one instance, as Server.Instances reports it and
// Server.AddInstance takes it.
type Instance struct {
	ID           string
	Region       string
	AZ           string
	InstanceType string
	ImageID      string
	State        string // pending, running, shutting-down or terminated
	Spot         bool
	// SpotRequestID is the spot instance request (sir-…) that launched it.
	SpotRequestID string
	ClientToken   string
	LaunchIndex   int
	UserData      string // decoded
	Tags          map[string]string
	VolumeTags    map[string]string
	// SecurityGroupIDs are the instance's groups; AddInstance defaults them
	// to the region's default group.
	SecurityGroupIDs   []string
	HTTPTokensRequired bool
	// MetadataTags is whether the IMDS serves the instance's tags
	// (MetadataOptions.InstanceMetadataTags enabled).
	MetadataTags bool
	LaunchTime   time.Time
	SubnetID     string
}

// SecurityGroup is a snapshot of one security group.
type SecurityGroup struct {
	ID     string
	Name   string
	VpcID  string
	Region string
	Tags   map[string]string
	// Ingress are the inbound rules, one per peer, written as
	// "PROTOCOL FROM-TO PEER", e.g. "tcp 22-22 0.0.0.0/0", or "-1 all PEER" for
	// all traffic, where PEER is a CIDR or a group ID.
	Ingress []string
}

// SpotRequest is a snapshot of one spot instance request.
type SpotRequest struct {
	ID         string
	State      string // open, active, closed or cancelled
	InstanceID string
	Tags       map[string]string
	Region     string
}

// Server is a running fake EC2. Its methods are safe for concurrent use.
type Server struct {
	opts Options
	now  func() time.Time
	url  string

	httpSrv *http.Server
	done    chan struct{} // closed by Close
	wg      sync.WaitGroup
	close   sync.Once

	mu    sync.Mutex
	state *cloud
}

// New starts a fake EC2 listening on 127.0.0.1 on a free port. It panics if
// it cannot listen there or on Options.IMDSListen, as httptest.NewServer
// does.
func New(o Options) *Server {
	// Keep copies: the caller may reuse what it passed.
	o.Credentials = maps.Clone(o.Credentials)
	o.Regions = slices.Clone(o.Regions)
	o.Catalog = slices.Clone(o.Catalog)
	if len(o.Regions) == 0 {
		o.Regions = []string{"us-east-1", "eu-west-1", "us-west-2"}
	}
	if o.Catalog == nil {
		o.Catalog = DefaultCatalog()
	}
	if o.SpotInstanceLimit == 0 {
		o.SpotInstanceLimit = 20
	}
	if o.IMDSListen == "" {
		o.IMDSListen = "127.0.0.1:0"
	}
	s := &Server{opts: o, now: o.Now, done: make(chan struct{})}
	if s.now == nil {
		s.now = time.Now
	}
	s.state = newCloud(o)

	// Fail here rather than at each launch when IMDSListen is unusable.
	probe, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", o.IMDSListen)
	if err != nil {
		panic(fmt.Sprintf("ec2fake: IMDSListen %q: %v", o.IMDSListen, err))
	}
	_ = probe.Close()

	ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		panic(fmt.Sprintf("ec2fake: listen: %v", err))
	}
	s.url = "http://" + ln.Addr().String()
	s.httpSrv = &http.Server{Handler: http.HandlerFunc(s.serveHTTP), ReadHeaderTimeout: 10 * time.Second}
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		if err := s.httpSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.logf("ec2fake: serve: %v", err)
		}
	}()
	go s.tick()
	return s
}

// URL is the endpoint to give the SDK as BaseEndpoint.
func (s *Server) URL() string { return s.url }

// Close stops the server, every instance's metadata server and the
// background tick, and waits for the Boot and Terminated callbacks already
// started. It is safe to call more than once.
func (s *Server) Close() {
	s.close.Do(func() {
		close(s.done)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.httpSrv.Shutdown(ctx)
		_ = s.httpSrv.Close()
		s.mu.Lock()
		for _, in := range s.state.instances {
			in.stopIMDS()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
}

// tick applies time-driven transitions (boot, shutdown, spot interruption)
// even when nobody asks, so that Options.Terminated fires on time.
func (s *Server) tick() {
	defer s.wg.Done()
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
			s.mu.Lock()
			s.advance()
			s.mu.Unlock()
		}
	}
}

// goCallback runs f in its own goroutine unless the server is closing.
// Called with s.mu held.
func (s *Server) goCallback(f func()) {
	select {
	case <-s.done:
		return
	default:
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
}

func (s *Server) logf(format string, args ...any) {
	if s.opts.Logf != nil {
		s.opts.Logf(format, args...)
	}
}

// Instances returns every instance, terminated ones included, in launch order.
func (s *Server) Instances() []Instance {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance()
	out := make([]Instance, 0, len(s.state.instanceOrder))
	for _, id := range s.state.instanceOrder {
		out = append(out, s.state.instances[id].snapshot())
	}
	return out
}

// Instance returns one instance by ID.
func (s *Server) Instance(id string) (Instance, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance()
	in, ok := s.state.instances[id]
	if !ok {
		return Instance{}, false
	}
	return in.snapshot(), true
}

// Calls is how many requests of that action were received, failed ones
// included.
func (s *Server) Calls(action string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state.calls[action]
}

// SecurityGroups returns every security group, default ones included, in
// creation order.
func (s *Server) SecurityGroups() []SecurityGroup {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]SecurityGroup, 0, len(s.state.groups))
	for _, g := range s.state.groups {
		out = append(out, g.snapshot())
	}
	return out
}

// SpotRequests returns every spot instance request in creation order.
func (s *Server) SpotRequests() []SpotRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance()
	out := make([]SpotRequest, 0, len(s.state.spotOrder))
	for _, id := range s.state.spotOrder {
		r := s.state.spot[id]
		out = append(out, SpotRequest{ID: r.id, State: r.state, InstanceID: r.instanceID, Tags: cloneTags(r.tags), Region: r.region})
	}
	return out
}

// IMDSURL is the base URL ("http://host:port") of the instance's metadata
// service, or "" for an unknown or terminated instance.
func (s *Server) IMDSURL(id string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance()
	in, ok := s.state.instances[id]
	if !ok || in.imds == nil {
		return ""
	}
	return in.imds.url
}

func cloneTags(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
