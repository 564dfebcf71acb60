package ec2fake

import (
	"encoding/base64"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// This file is RunInstances: checking a launch as EC2 does, idempotency by
// client token, capacity and quotas.

const (
	idempotencyWindow = 7 * 24 * time.Hour
	maxUserData       = 16 * 1024
	// maxInstances is how many instances may be alive at once per region,
	// whatever their type: each has a metadata server listening.
	maxInstances = 256
)

// launchSpec is a RunInstances request, checked.
type launchSpec struct {
	image            image
	itype            *InstanceType
	zone             zone
	subnet           *subnet
	groups           []string
	userData         string
	tags             map[string]map[string]string
	spot             bool
	maxPrice         string
	tokensRequired   bool
	imdsEnabled      bool
	metadataTags     bool
	hopLimit         int
	minCount, maxCnt int
}

func (s *Server) runInstances(r *request) (any, error) {
	token := r.str("ClientToken")
	if len(token) > 64 {
		return nil, errorf("InvalidParameterValue", "Value (%s) for parameter clientToken is invalid. Length exceeds maximum of 64 characters.", token)
	}
	if token != "" {
		if l, ok := s.state.launches[r.region+"/"+token]; ok && r.now.Sub(l.at) < idempotencyWindow {
			if l.fingerprint != fingerprint(r.form) {
				return nil, errorf("IdempotentParameterMismatch", "Arguments on this idempotent request are inconsistent with arguments used in previous request(s).")
			}
			return s.reservationXML(l.reservationID, l.groups, l.instanceIDs), nil
		}
	}
	spec, err := s.readLaunchSpec(r)
	if err != nil {
		return nil, err
	}
	n, err := s.launchCount(r.region, spec)
	if err != nil {
		return nil, err
	}

	c := s.state
	resID := c.newID("r-", 17)
	start := func(i int) *instance {
		in := &instance{
			Instance: Instance{
				ID: c.newID("i-", 17), Region: r.region, AZ: spec.zone.name, InstanceType: spec.itype.Name,
				ImageID: spec.image.imageID(r.region), State: "pending", Spot: spec.spot, ClientToken: token,
				LaunchIndex: i, UserData: spec.userData, Tags: cloneTags(spec.tags["instance"]),
				VolumeTags: cloneTags(spec.tags["volume"]), SecurityGroupIDs: slices.Clone(spec.groups),
				HTTPTokensRequired: spec.tokensRequired, MetadataTags: spec.metadataTags,
				LaunchTime: r.now.UTC().Truncate(time.Second), SubnetID: spec.subnet.id,
			},
			reservationID: resID, vpcID: spec.subnet.vpcID, privateIP: c.privateIP(r.region, spec.subnet),
			arch: spec.itype.Arch, imdsEnabled: spec.imdsEnabled, hopLimit: spec.hopLimit,
		}
		if spec.spot {
			sr := s.newSpotRequest(in, spec.maxPrice, spec.tags["spot-instances-request"])
			in.SpotRequestID = sr.id
		}
		c.instances[in.ID] = in
		c.instanceOrder = append(c.instanceOrder, in.ID)
		s.startIMDS(in)
		return in
	}
	var ids []string
	var launched []*instance
	for i := range n {
		in := start(i)
		ids = append(ids, in.ID)
		launched = append(launched, in)
	}
	if n > 1 && s.takeLaunchFault(faultRepeatIndex) {
		launched[1].LaunchIndex = launched[0].LaunchIndex
		s.logf("ec2fake: %s RunInstances: instance %s repeats launch index %d", r.region, launched[1].ID, launched[0].LaunchIndex)
	}
	var boot []*instance
	if s.takeLaunchFault(faultStray) {
		stray := start(launched[0].LaunchIndex)
		boot = append(boot, stray)
		s.logf("ec2fake: %s RunInstances: instance %s started and left out of the answer", r.region, stray.ID)
	}
	if k := (capacityKey{r.region, spec.itype.Name, spec.spot}); hasCapacityLimit(c.capacity, k) {
		c.capacity[k] -= n
	}
	if token != "" {
		c.launches[r.region+"/"+token] = &launch{fingerprint: fingerprint(r.form), reservationID: resID,
			instanceIDs: ids, groups: spec.groups, at: r.now}
	}
	out := s.reservationXML(resID, spec.groups, ids)
	for _, in := range append(launched, boot...) {
		if s.opts.BootDelay == 0 {
			in.State = "running"
		}
		if f := s.opts.Boot; f != nil && in.imds != nil {
			snap, u := in.snapshot(), in.imds.url
			s.goCallback(func() { f(snap, u) })
		}
	}
	return out, nil
}

// hasCapacityLimit reports whether SetCapacity limits k.
func hasCapacityLimit(m map[capacityKey]int, k capacityKey) bool {
	_, ok := m[k]
	return ok
}

// fingerprint identifies a RunInstances request's parameters, for
// idempotency: everything but the token itself.
func fingerprint(form url.Values) string {
	f := url.Values{}
	for k, v := range form {
		if k != "ClientToken" && k != "Action" && k != "Version" {
			f[k] = v
		}
	}
	return f.Encode()
}

// readLaunchSpec checks a RunInstances request as EC2 does, before anything
// is launched.
func (s *Server) readLaunchSpec(r *request) (*launchSpec, error) {
	spec := &launchSpec{imdsEnabled: true, hopLimit: 2}
	var err error
	if spec.minCount, err = r.integer("MinCount", 0); err != nil {
		return nil, err
	}
	if spec.maxCnt, err = r.integer("MaxCount", 0); err != nil {
		return nil, err
	}
	if spec.minCount < 1 || spec.maxCnt < 1 {
		return nil, errorf("InvalidParameterValue", "Invalid value '%d' for MinCount/MaxCount. Must be greater than zero.", min(spec.minCount, spec.maxCnt))
	}
	if spec.minCount > spec.maxCnt {
		return nil, errorf("InvalidParameterValue", "Invalid value '%d' for MinCount. Must not be greater than MaxCount.", spec.minCount)
	}

	imageID := r.str("ImageId")
	if imageID == "" {
		return nil, errorf("MissingParameter", "The request must contain the parameter ImageId")
	}
	if !strings.HasPrefix(imageID, "ami-") {
		return nil, errorf("InvalidAMIID.Malformed", "Invalid id: \"%s\" (expecting \"ami-...\")", imageID)
	}
	im, ok := imageByID(r.region, imageID)
	if !ok {
		return nil, errorf("InvalidAMIID.NotFound", "The image id '[%s]' does not exist", imageID)
	}
	spec.image = im

	unsupported := errorf("Unsupported", "The requested configuration is currently not supported. Please check the documentation for supported configurations.")
	t, ok := s.instanceType(r.str("InstanceType"))
	if !ok || !t.offeredIn(r.region) {
		return nil, unsupported
	}
	spec.itype = t
	if t.Arch != im.arch {
		return nil, errorf("InvalidParameterValue", "The architecture '%s' of the specified instance type does not match the architecture '%s' "+
			"of the specified AMI. Specify an instance type and an AMI that have matching architectures, and try again.", t.Arch, im.arch)
	}

	if err := s.readPlacement(r, spec); err != nil {
		return nil, err
	}
	if err := s.readMarket(r, spec); err != nil {
		return nil, err
	}
	if spec.spot && !t.Spot {
		return nil, unsupported
	}

	if ud := r.str("UserData"); ud != "" {
		b, err := base64.StdEncoding.DecodeString(ud)
		if err != nil {
			return nil, errorf("InvalidParameterValue", "Invalid BASE64 encoding of user data.")
		}
		if len(b) > maxUserData {
			return nil, errorf("InvalidParameterValue", "User data is limited to %d bytes.", maxUserData)
		}
		spec.userData = string(b)
	}
	if spec.tags, err = r.tagSpecifications("instance", "volume", "spot-instances-request"); err != nil {
		return nil, err
	}
	for _, tags := range spec.tags {
		if len(tags) > maxTags {
			return nil, errorf("TagLimitExceeded", "The maximum number of Tags for a resource is %d.", maxTags)
		}
	}

	switch v := r.str("MetadataOptions.HttpTokens"); v {
	case "required":
		spec.tokensRequired = true
	case "", "optional":
	default:
		return nil, errorf("InvalidParameterValue", "Invalid value '%s' for HttpTokens.", v)
	}
	switch v := r.str("MetadataOptions.HttpEndpoint"); v {
	case "disabled":
		spec.imdsEnabled = false
	case "", "enabled":
	default:
		return nil, errorf("InvalidParameterValue", "Invalid value '%s' for HttpEndpoint.", v)
	}
	switch v := r.str("MetadataOptions.InstanceMetadataTags"); v {
	case "enabled":
		spec.metadataTags = true
	case "", "disabled":
	default:
		return nil, errorf("InvalidParameterValue", "Invalid value '%s' for InstanceMetadataTags.", v)
	}
	if spec.hopLimit, err = r.integer("MetadataOptions.HttpPutResponseHopLimit", 2); err != nil {
		return nil, err
	}
	if spec.hopLimit < 1 || spec.hopLimit > 64 {
		return nil, errorf("InvalidParameterValue", "Invalid value '%d' for HttpPutResponseHopLimit. Valid values are 1 to 64.", spec.hopLimit)
	}
	return spec, nil
}

// readPlacement resolves the subnet, zone and security groups.
func (s *Server) readPlacement(r *request, spec *launchSpec) error {
	c := s.state
	zones := zonesOf(r.region)
	spec.zone = zones[0]
	if name := r.str("Placement.AvailabilityZone"); name != "" {
		i := slices.IndexFunc(zones, func(z zone) bool { return z.name == name })
		if i < 0 {
			return errorf("InvalidParameterValue", "Invalid availability zone: [%s]", name)
		}
		spec.zone = zones[i]
	}
	if id := r.str("SubnetId"); id != "" {
		sn, ok := c.subnetByID(r.region, id)
		if !ok {
			return notFound("InvalidSubnetID.NotFound", "subnet ID", []string{id})
		}
		if r.str("Placement.AvailabilityZone") != "" && sn.zone.name != spec.zone.name {
			return errorf("InvalidParameterCombination", "The specified subnet %s is not in the specified availability zone %s.", id, spec.zone.name)
		}
		spec.subnet, spec.zone = sn, sn.zone
	} else {
		spec.subnet = c.defaultSubnet(spec.zone)
	}
	for _, id := range r.list("SecurityGroupId") {
		g := c.groupByID(r.region, id)
		if g == nil || g.vpcID != spec.subnet.vpcID {
			return errorf("InvalidGroup.NotFound", "The security group '%s' does not exist in VPC '%s'", id, spec.subnet.vpcID)
		}
		spec.groups = append(spec.groups, g.id)
	}
	for _, name := range r.list("SecurityGroup") {
		g := c.groupByName(spec.subnet.vpcID, name)
		if g == nil {
			return errorf("InvalidGroup.NotFound", "The security group '%s' does not exist in VPC '%s'", name, spec.subnet.vpcID)
		}
		if !slices.Contains(spec.groups, g.id) {
			spec.groups = append(spec.groups, g.id)
		}
	}
	if len(spec.groups) == 0 {
		spec.groups = []string{c.defaultGroup(r.region).id}
	}
	return nil
}

// readMarket reads InstanceMarketOptions: one-time spot instances that
// terminate when interrupted are what the fake sells.
func (s *Server) readMarket(r *request, spec *launchSpec) error {
	switch mt := r.str("InstanceMarketOptions.MarketType"); mt {
	case "":
		return nil
	case "spot":
		spec.spot = true
	default:
		return errorf("InvalidParameterValue", "Invalid value '%s' for MarketType.", mt)
	}
	const p = "InstanceMarketOptions.SpotOptions."
	switch v := r.str(p + "SpotInstanceType"); v {
	case "", "one-time":
	case "persistent":
		return errorf("InvalidParameterCombination", "Persistent Spot requests are only supported with the interruption behavior stop or hibernate.")
	default:
		return errorf("InvalidParameterValue", "Invalid value '%s' for SpotInstanceType.", v)
	}
	switch v := r.str(p + "InstanceInterruptionBehavior"); v {
	case "", "terminate":
	case "stop", "hibernate":
		return errorf("InvalidParameterCombination", "The interruption behavior %s is only supported with persistent Spot requests.", v)
	default:
		return errorf("InvalidParameterValue", "Invalid value '%s' for InstanceInterruptionBehavior.", v)
	}
	if v := r.str(p + "MaxPrice"); v != "" {
		price, err := strconv.ParseFloat(v, 64)
		if err != nil || price <= 0 {
			return errorf("InvalidParameterValue", "Invalid value '%s' for MaxPrice.", v)
		}
		if spec.itype.Spot && price < spec.itype.SpotPrice {
			return errorf("SpotMaxPriceTooLow", "Your Spot request price of %s is lower than the minimum required Spot request fulfillment price of %s.",
				v, formatPrice(spec.itype.SpotPrice))
		}
		spec.maxPrice = v
	}
	return nil
}

// launchCount is how many instances to launch: MaxCount, or fewer (but at
// least MinCount) when capacity or a quota allows no more.
func (s *Server) launchCount(region string, spec *launchSpec) (int, error) {
	n := spec.maxCnt
	c := s.state
	if avail, ok := c.capacity[capacityKey{region, spec.itype.Name, spec.spot}]; ok {
		if avail < spec.minCount {
			if spec.spot {
				return 0, errorf("InsufficientInstanceCapacity", "There is no Spot capacity available that matches your request.")
			}
			var others []string
			for _, z := range zonesOf(region)[1:] {
				others = append(others, z.name)
			}
			return 0, errorf("InsufficientInstanceCapacity", "We currently do not have sufficient %s capacity in the Availability Zone you requested (%s). "+
				"Our system will be working on provisioning additional capacity. You can currently get %s capacity by not specifying an "+
				"Availability Zone in your request or choosing %s.", spec.itype.Name, spec.zone.name, spec.itype.Name, strings.Join(others, ", "))
		}
		n = min(n, avail)
	}
	var alive, spotAlive, vcpusAlive int
	for _, in := range c.instances {
		if in.Region != region || in.State == "terminated" {
			continue
		}
		alive++
		if in.Spot {
			spotAlive++
		} else if t, ok := s.instanceType(in.InstanceType); ok {
			vcpusAlive += t.VCPUs
		}
	}
	if alive+spec.minCount > maxInstances {
		return 0, errorf("InstanceLimitExceeded", "You have requested more instances (%d) than your current instance limit of %d allows "+
			"for the specified instance type. Please visit http://aws.amazon.com/contact-us/ec2-request to request an adjustment to this limit.",
			alive+spec.minCount, maxInstances)
	}
	n = min(n, maxInstances-alive)
	if spec.spot {
		limit := s.opts.SpotInstanceLimit
		if spotAlive+spec.minCount > limit {
			return 0, errorf("MaxSpotInstanceCountExceeded", "Max spot instance count exceeded")
		}
		n = min(n, limit-spotAlive)
	} else if limit := s.opts.OnDemandVCPULimit; limit > 0 {
		v := spec.itype.VCPUs
		if vcpusAlive+spec.minCount*v > limit {
			return 0, errorf("VcpuLimitExceeded", "You have requested more vCPU capacity than your current vCPU limit of %d allows for the "+
				"instance bucket that the specified instance type belongs to. Please visit http://aws.amazon.com/contact-us/ec2-request "+
				"to request an adjustment to this limit.", limit)
		}
		n = min(n, (limit-vcpusAlive)/v)
	}
	return n, nil
}
