package ec2fake

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"
)

// This file is the cloud's state and the time-driven life of its instances.
//
//	pending ──BootDelay──▶ running ──TerminateInstances──▶ shutting-down ──ShutdownDelay──▶ terminated
//	   │                      │                                                              ▲
//	   └──────────────────────┴──── Interrupt (at its time), Kill (at once) ──────────────────┘
//
// Terminated instances stay listed, as EC2 lists them for a while.

// cloud is everything the fake knows. It is guarded by Server.mu.
type cloud struct {
	calls    map[string]int
	faults   []*fault
	capacity map[capacityKey]int

	vpcs    map[string]*vpc // by region: the default VPC
	subnets []*subnet       // the default subnets, one per zone
	groups  []*securityGroup

	instances     map[string]*instance
	instanceOrder []string
	spot          map[string]*spotRequest
	spotOrder     []string
	launches      map[string]*launch // by region + "/" + client token

	ids    map[string]bool // every ID handed out
	nextIP map[string]int  // per region, for private addresses
}

type vpc struct {
	id, region, cidr string
}

type subnet struct {
	id, vpcID, cidr string
	zone            zone
}

// launch remembers a RunInstances call with a client token, for idempotency.
type launch struct {
	fingerprint   string
	reservationID string
	instanceIDs   []string
	groups        []string
	at            time.Time
}

// instance is an instance and what EC2 knows of it beyond Instance.
type instance struct {
	Instance
	reservationID string
	vpcID         string
	privateIP     string
	arch          string
	imdsEnabled   bool
	hopLimit      int
	reasonCode    string // the state reason, once terminating
	reasonMessage string
	reason        string    // stateTransitionReason, e.g. "User initiated (2024-10-07 12:00:00 GMT)"
	terminateAt   time.Time // when shutting-down ends
	interruptAt   time.Time // announced spot interruption; zero: none
	imds          *imdsServer
}

func newCloud(o Options) *cloud {
	c := &cloud{
		calls:     map[string]int{},
		capacity:  map[capacityKey]int{},
		vpcs:      map[string]*vpc{},
		instances: map[string]*instance{},
		spot:      map[string]*spotRequest{},
		launches:  map[string]*launch{},
		ids:       map[string]bool{},
		nextIP:    map[string]int{},
	}
	for _, region := range o.Regions {
		v := &vpc{id: "vpc-" + hashHex("vpc/"+region, 17), region: region, cidr: "172.31.0.0/16"}
		c.vpcs[region] = v
		for i, z := range zonesOf(region) {
			c.subnets = append(c.subnets, &subnet{
				id:    "subnet-" + hashHex("subnet/"+z.name, 17),
				vpcID: v.id,
				cidr:  fmt.Sprintf("172.31.%d.0/20", 16*i),
				zone:  z,
			})
		}
		c.groups = append(c.groups, &securityGroup{
			id: "sg-" + hashHex("sg/default/"+region, 17), name: "default",
			description: "default VPC security group", vpcID: v.id, region: region,
			tags: map[string]string{}, egress: []rule{allTraffic()},
		})
	}
	return c
}

// newID is a fresh resource ID: prefix + n random hex digits.
func (c *cloud) newID(prefix string, n int) string {
	for {
		b := make([]byte, (n+1)/2)
		_, _ = rand.Read(b)
		id := prefix + hex.EncodeToString(b)[:n]
		if !c.ids[id] {
			c.ids[id] = true
			return id
		}
	}
}

// privateIP hands out the next address of the zone's subnet.
func (c *cloud) privateIP(region string, sn *subnet) string {
	c.nextIP[region]++
	n := c.nextIP[region] + 3
	base := 0
	for i, z := range zonesOf(region) {
		if z.name == sn.zone.name {
			base = 16 * i
		}
	}
	return fmt.Sprintf("172.31.%d.%d", base+n/250, 4+n%250)
}

func (c *cloud) subnetByID(region, id string) (*subnet, bool) {
	for _, sn := range c.subnets {
		if sn.id == id && sn.zone.region == region {
			return sn, true
		}
	}
	return nil, false
}

func (c *cloud) defaultSubnet(z zone) *subnet {
	for _, sn := range c.subnets {
		if sn.zone.name == z.name {
			return sn
		}
	}
	return nil
}

// snapshot copies the instance for a caller outside the lock.
func (in *instance) snapshot() Instance {
	out := in.Instance
	out.Tags = cloneTags(in.Tags)
	out.VolumeTags = cloneTags(in.VolumeTags)
	out.SecurityGroupIDs = slices.Clone(in.SecurityGroupIDs)
	return out
}

func (in *instance) alive() bool {
	return in.State != "terminated" && in.State != "shutting-down"
}

func (in *instance) stopIMDS() {
	if in.imds != nil {
		in.imds.close()
		in.imds = nil
	}
}

// stateCode is EC2's numeric code of an instance state.
func stateCode(state string) int {
	return map[string]int{"pending": 0, "running": 16, "shutting-down": 32, "terminated": 48, "stopping": 64, "stopped": 80}[state]
}

// advance applies the transitions due by now. Called with s.mu held.
func (s *Server) advance() {
	now := s.now()
	for _, id := range s.state.instanceOrder {
		in := s.state.instances[id]
		if in.State == "pending" && s.opts.BootDelay > 0 && !now.Before(in.LaunchTime.Add(s.opts.BootDelay)) {
			in.State = "running"
		}
		if !in.interruptAt.IsZero() && in.State != "terminated" && !now.Before(in.interruptAt) {
			s.terminate(in, "Server.SpotInstanceTermination", "Server.SpotInstanceTermination: Spot instance termination",
				"instance-terminated-no-capacity")
			s.finishTermination(in)
		}
		if in.State == "shutting-down" && !now.Before(in.terminateAt) {
			s.finishTermination(in)
		}
	}
}

// terminate moves an instance to shutting-down (if it is not on its way
// already) and closes its spot request with statusCode.
func (s *Server) terminate(in *instance, reasonCode, reasonMessage, statusCode string) {
	if !in.alive() {
		return
	}
	in.State = "shutting-down"
	in.reasonCode, in.reasonMessage = reasonCode, reasonMessage
	who := "Service"
	if strings.HasPrefix(reasonCode, "Client.") {
		who = "User"
	}
	in.reason = fmt.Sprintf("%s initiated (%s)", who, s.now().UTC().Format("2006-01-02 15:04:05 GMT"))
	in.terminateAt = s.now().Add(s.opts.ShutdownDelay)
	if r, ok := s.state.spot[in.SpotRequestID]; ok && r.state == "active" {
		r.state, r.statusCode, r.statusTime = "closed", statusCode, s.now()
	}
}

// finishTermination moves a shutting-down instance to terminated.
func (s *Server) finishTermination(in *instance) {
	if in.State == "terminated" {
		return
	}
	in.State = "terminated"
	in.stopIMDS()
	if f := s.opts.Terminated; f != nil {
		snap := in.snapshot()
		s.goCallback(func() { f(snap) })
	}
}

// Interrupt announces a spot interruption: from now on the instance's IMDS
// answers spot/instance-action with {"action":"terminate","time":…} and the
// instance terminates at now+in.
func (s *Server) Interrupt(id string, in time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	inst, ok := s.state.instances[id]
	if !ok || inst.State == "terminated" {
		return
	}
	inst.interruptAt = s.now().Add(in).UTC().Truncate(time.Second)
	s.advance()
}

// Kill makes the instance vanish at once, as if the cloud lost it: it is
// terminated without a shutdown, and its spot request closed.
func (s *Server) Kill(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	in, ok := s.state.instances[id]
	if !ok {
		return
	}
	s.terminate(in, "Server.InternalError", "Server.InternalError: Internal error on launch", "instance-terminated-by-service")
	s.finishTermination(in)
}

// AddInstance puts an instance there directly, as if launched by someone
// else (e.g. one tagged by a server that has no record of it), and returns
// its ID. Empty fields get defaults: a fresh ID, the first region, its first
// zone and default subnet and group, state running, launch time now. A spot
// instance without a SpotRequestID gets an active spot request. Boot is not
// called for it, but it has a metadata service.
func (s *Server) AddInstance(in Instance) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.state
	if in.ID == "" {
		in.ID = c.newID("i-", 17)
	}
	c.ids[in.ID] = true
	if in.Region == "" {
		in.Region = s.opts.Regions[0]
	}
	if in.AZ == "" {
		in.AZ = zonesOf(in.Region)[0].name
	}
	if in.State == "" {
		in.State = "running"
	}
	if in.LaunchTime.IsZero() {
		in.LaunchTime = s.now().UTC().Truncate(time.Second)
	}
	if in.InstanceType == "" {
		in.InstanceType = "t3.micro"
	}
	if in.ImageID == "" {
		in.ImageID = images[0].imageID(in.Region)
	}
	z := zone{name: in.AZ, region: in.Region}
	for _, zz := range zonesOf(in.Region) {
		if zz.name == in.AZ {
			z = zz
		}
	}
	sn := c.defaultSubnet(z)
	if in.SubnetID == "" && sn != nil {
		in.SubnetID = sn.id
	}
	if len(in.SecurityGroupIDs) == 0 {
		if g := c.defaultGroup(in.Region); g != nil {
			in.SecurityGroupIDs = []string{g.id}
		}
	}
	in.Tags = cloneTags(in.Tags)
	in.VolumeTags = cloneTags(in.VolumeTags)
	inst := &instance{Instance: in, reservationID: c.newID("r-", 17), imdsEnabled: true, hopLimit: 2, arch: "x86_64"}
	if t, ok := s.instanceType(in.InstanceType); ok {
		inst.arch = t.Arch
	}
	if v := c.vpcs[in.Region]; v != nil {
		inst.vpcID = v.id
	}
	if sn != nil {
		inst.privateIP = c.privateIP(in.Region, sn)
	}
	if in.Spot && in.SpotRequestID == "" {
		r := s.newSpotRequest(inst, "", nil)
		inst.SpotRequestID = r.id
	}
	c.instances[in.ID] = inst
	c.instanceOrder = append(c.instanceOrder, in.ID)
	if in.State != "terminated" {
		s.startIMDS(inst)
	}
	return in.ID
}
