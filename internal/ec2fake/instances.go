package ec2fake

import (
	"strconv"
	"strings"
)

// This file is the instances as EC2 describes them: DescribeInstances and
// TerminateInstances.

type xmlState struct {
	Code int    `xml:"code"`
	Name string `xml:"name"`
}

type xmlInstance struct {
	InstanceID     string   `xml:"instanceId"`
	ImageID        string   `xml:"imageId"`
	State          xmlState `xml:"instanceState"`
	PrivateDNSName string   `xml:"privateDnsName"`
	DNSName        string   `xml:"dnsName"`
	Reason         string   `xml:"reason"`
	AmiLaunchIndex int      `xml:"amiLaunchIndex"`
	InstanceType   string   `xml:"instanceType"`
	LaunchTime     string   `xml:"launchTime"`
	Placement      struct {
		AvailabilityZone   string `xml:"availabilityZone"`
		AvailabilityZoneID string `xml:"availabilityZoneId,omitempty"`
		Tenancy            string `xml:"tenancy"`
	} `xml:"placement"`
	Monitoring struct {
		State string `xml:"state"`
	} `xml:"monitoring"`
	SubnetID         string     `xml:"subnetId,omitempty"`
	VpcID            string     `xml:"vpcId,omitempty"`
	PrivateIPAddress string     `xml:"privateIpAddress,omitempty"`
	Groups           []xmlGroup `xml:"groupSet>item"`
	StateReason      *struct {
		Code    string `xml:"code"`
		Message string `xml:"message"`
	} `xml:"stateReason,omitempty"`
	Architecture          string   `xml:"architecture"`
	RootDeviceType        string   `xml:"rootDeviceType"`
	RootDeviceName        string   `xml:"rootDeviceName"`
	InstanceLifecycle     string   `xml:"instanceLifecycle,omitempty"`
	SpotInstanceRequestID string   `xml:"spotInstanceRequestId,omitempty"`
	VirtualizationType    string   `xml:"virtualizationType"`
	ClientToken           string   `xml:"clientToken,omitempty"`
	Tags                  []xmlTag `xml:"tagSet>item"`
	Hypervisor            string   `xml:"hypervisor"`
	MetadataOptions       struct {
		State                   string `xml:"state"`
		HTTPTokens              string `xml:"httpTokens"`
		HTTPPutResponseHopLimit int    `xml:"httpPutResponseHopLimit"`
		HTTPEndpoint            string `xml:"httpEndpoint"`
		HTTPProtocolIPv6        string `xml:"httpProtocolIpv6"`
		InstanceMetadataTags    string `xml:"instanceMetadataTags"`
	} `xml:"metadataOptions"`
}

func enabled(b bool) string {
	if b {
		return "enabled"
	}
	return "disabled"
}

func (s *Server) instanceXML(in *instance) xmlInstance {
	x := xmlInstance{
		InstanceID: in.ID, ImageID: in.ImageID, State: xmlState{Code: stateCode(in.State), Name: in.State},
		AmiLaunchIndex: in.LaunchIndex, InstanceType: in.InstanceType, LaunchTime: in.LaunchTime.UTC().Format(timeFormat),
		Architecture: in.arch, RootDeviceType: "ebs", RootDeviceName: "/dev/sda1", VirtualizationType: "hvm",
		ClientToken: in.ClientToken, Tags: tagSet(in.Tags), Hypervisor: "xen", SpotInstanceRequestID: in.SpotRequestID,
	}
	x.Placement.AvailabilityZone, x.Placement.Tenancy = in.AZ, "default"
	for _, z := range zonesOf(in.Region) {
		if z.name == in.AZ {
			x.Placement.AvailabilityZoneID = z.id
		}
	}
	x.Monitoring.State = "disabled"
	if in.Spot {
		x.InstanceLifecycle = "spot"
	}
	if in.State != "terminated" {
		x.SubnetID, x.VpcID, x.PrivateIPAddress = in.SubnetID, in.vpcID, in.privateIP
		if in.privateIP != "" {
			x.PrivateDNSName = "ip-" + strings.ReplaceAll(in.privateIP, ".", "-") + "." + in.Region + ".compute.internal"
		}
		x.Groups = s.groupSet(in.SecurityGroupIDs)
	}
	if in.reasonCode != "" {
		x.StateReason = &struct {
			Code    string `xml:"code"`
			Message string `xml:"message"`
		}{in.reasonCode, in.reasonMessage}
		x.Reason = in.reason
	}
	x.MetadataOptions.State = "applied"
	x.MetadataOptions.HTTPTokens = "optional"
	if in.HTTPTokensRequired {
		x.MetadataOptions.HTTPTokens = "required"
	}
	x.MetadataOptions.HTTPPutResponseHopLimit = in.hopLimit
	x.MetadataOptions.HTTPEndpoint = enabled(in.imdsEnabled)
	x.MetadataOptions.HTTPProtocolIPv6 = "disabled"
	x.MetadataOptions.InstanceMetadataTags = enabled(in.MetadataTags)
	return x
}

// xmlReservation is a reservation in DescribeInstances.
type xmlReservation struct {
	ReservationID string        `xml:"reservationId"`
	OwnerID       string        `xml:"ownerId"`
	Groups        []xmlGroup    `xml:"groupSet>item"`
	Instances     []xmlInstance `xml:"instancesSet>item"`
}

// runInstancesResult is RunInstances' answer: one reservation.
type runInstancesResult struct {
	meta
	xmlReservation
}

// reservationXML is the answer to a launch of instances ids.
func (s *Server) reservationXML(resID string, groups, ids []string) *runInstancesResult {
	out := &runInstancesResult{xmlReservation: xmlReservation{ReservationID: resID, OwnerID: Account, Groups: s.groupSet(groups)}}
	for _, id := range ids {
		out.Instances = append(out.Instances, s.instanceXML(s.state.instances[id]))
	}
	return out
}

// instancesByID resolves InstanceId.N in the request's region; any unknown
// ID fails the whole request, as on EC2.
func (s *Server) instancesByID(r *request, ids []string) ([]*instance, error) {
	var out []*instance
	var missing []string
	for _, id := range ids {
		if !strings.HasPrefix(id, "i-") {
			return nil, errorf("InvalidInstanceID.Malformed", "Invalid id: \"%s\"", id)
		}
		in, ok := s.state.instances[id]
		if !ok || in.Region != r.region {
			missing = append(missing, id)
			continue
		}
		out = append(out, in)
	}
	if len(missing) > 0 {
		return nil, notFound("InvalidInstanceID.NotFound", "instance ID", missing)
	}
	return out, nil
}

func (s *Server) describeInstances(r *request) (any, error) {
	fs, err := r.filters("instance-id", "instance-state-name", "instance-state-code", "instance-type", "availability-zone",
		"image-id", "instance-lifecycle", "spot-instance-request-id", "subnet-id", "vpc-id", "reservation-id", "client-token",
		"ami-launch-index", "architecture", "instance.group-id", "instance.group-name", "private-ip-address",
		"tag:", "tag-key", "tag-value")
	if err != nil {
		return nil, err
	}
	ids := r.list("InstanceId")
	var candidates []*instance
	if len(ids) > 0 {
		if r.has("MaxResults") {
			return nil, errorf("InvalidParameterCombination", "The parameter instancesSet cannot be used with the parameter maxResults")
		}
		if candidates, err = s.instancesByID(r, ids); err != nil {
			return nil, err
		}
	} else {
		for _, id := range s.state.instanceOrder {
			if in := s.state.instances[id]; in.Region == r.region {
				candidates = append(candidates, in)
			}
		}
	}
	var match []*instance
	for _, in := range candidates {
		if matchFilters(fs, func(name string) []string { return s.instanceAttr(in, name) }) {
			match = append(match, in)
		}
	}
	start, end, next, err := r.page(len(match), 5, 1000)
	if err != nil {
		return nil, err
	}
	out := &struct {
		meta
		Reservations []*xmlReservation `xml:"reservationSet>item"`
		NextToken    string            `xml:"nextToken,omitempty"`
	}{NextToken: next}
	byRes := map[string]*xmlReservation{}
	for _, in := range match[start:end] {
		res, ok := byRes[in.reservationID]
		if !ok {
			res = &xmlReservation{ReservationID: in.reservationID, OwnerID: Account}
			byRes[in.reservationID] = res
			out.Reservations = append(out.Reservations, res)
		}
		res.Instances = append(res.Instances, s.instanceXML(in))
	}
	return out, nil
}

// instanceAttr answers DescribeInstances' filters for one instance.
func (s *Server) instanceAttr(in *instance, name string) []string {
	if v, ok := tagAttr(in.Tags, name); ok {
		return v
	}
	switch name {
	case "instance-id":
		return []string{in.ID}
	case "instance-state-name":
		return []string{in.State}
	case "instance-state-code":
		return []string{strconv.Itoa(stateCode(in.State))}
	case "instance-type":
		return []string{in.InstanceType}
	case "availability-zone":
		return []string{in.AZ}
	case "image-id":
		return []string{in.ImageID}
	case "instance-lifecycle":
		if in.Spot {
			return []string{"spot"}
		}
		return nil
	case "spot-instance-request-id":
		return []string{in.SpotRequestID}
	case "subnet-id":
		return []string{in.SubnetID}
	case "vpc-id":
		return []string{in.vpcID}
	case "reservation-id":
		return []string{in.reservationID}
	case "client-token":
		return []string{in.ClientToken}
	case "ami-launch-index":
		return []string{strconv.Itoa(in.LaunchIndex)}
	case "architecture":
		return []string{in.arch}
	case "instance.group-id":
		return in.SecurityGroupIDs
	case "instance.group-name":
		var names []string
		for _, g := range s.groupSet(in.SecurityGroupIDs) {
			names = append(names, g.GroupName)
		}
		return names
	case "private-ip-address":
		return []string{in.privateIP}
	}
	return nil
}

func (s *Server) terminateInstances(r *request) (any, error) {
	ids := r.list("InstanceId")
	if len(ids) == 0 {
		return nil, errorf("MissingParameter", "The request must contain the parameter InstanceId")
	}
	insts, err := s.instancesByID(r, ids)
	if err != nil {
		return nil, err
	}
	type change struct {
		InstanceID    string   `xml:"instanceId"`
		CurrentState  xmlState `xml:"currentState"`
		PreviousState xmlState `xml:"previousState"`
	}
	out := &struct {
		meta
		Changes []change `xml:"instancesSet>item"`
	}{}
	for _, in := range insts {
		prev := in.State
		s.terminate(in, "Client.UserInitiatedShutdown", "Client.UserInitiatedShutdown: User initiated shutdown", "instance-terminated-by-user")
		out.Changes = append(out.Changes, change{InstanceID: in.ID,
			CurrentState: xmlState{stateCode(in.State), in.State}, PreviousState: xmlState{stateCode(prev), prev}})
	}
	if s.opts.ShutdownDelay == 0 {
		for _, in := range insts {
			if in.State == "shutting-down" {
				s.finishTermination(in)
			}
		}
	}
	return out, nil
}
