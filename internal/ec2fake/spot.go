package ec2fake

import (
	"strconv"
	"strings"
	"time"
)

// spotRequest is a one-time spot instance request. RunInstances with the
// spot market creates it active, with its instance; it closes when the
// instance terminates and is cancelled by CancelSpotInstanceRequests (its
// instance keeps running, as on EC2).
type spotRequest struct {
	id         string
	region     string
	state      string // open, active, closed, cancelled
	statusCode string // e.g. fulfilled, instance-terminated-by-user
	statusTime time.Time
	instanceID string
	maxPrice   string
	created    time.Time
	tags       map[string]string
	// launch specification
	imageID, instanceType, az, subnetID string
	groups                              []string
}

// newSpotRequest records the active request that launched inst.
func (s *Server) newSpotRequest(inst *instance, maxPrice string, tags map[string]string) *spotRequest {
	c := s.state
	if maxPrice == "" {
		if t, ok := s.instanceType(inst.InstanceType); ok {
			// Without a maximum, EC2 caps the price at the on-demand one; the
			// fake has no on-demand prices and shows a generous cap.
			maxPrice = strconv.FormatFloat(t.SpotPrice*3, 'f', 6, 64)
		}
	}
	r := &spotRequest{
		id: c.newID("sir-", 8), region: inst.Region, state: "active", statusCode: "fulfilled",
		statusTime: s.now(), instanceID: inst.ID, maxPrice: maxPrice, created: s.now(), tags: cloneTags(tags),
		imageID: inst.ImageID, instanceType: inst.InstanceType, az: inst.AZ, subnetID: inst.SubnetID,
		groups: inst.SecurityGroupIDs,
	}
	c.spot[r.id] = r
	c.spotOrder = append(c.spotOrder, r.id)
	return r
}

var spotStatusMessages = map[string]string{
	"pending-fulfillment":                   "Your Spot request is pending fulfillment.",
	"fulfilled":                             "Your spot request is fulfilled.",
	"request-canceled-and-instance-running": "Spot request was canceled but the instance is still running.",
	"canceled-before-fulfillment":           "Your spot request was canceled before it was fulfilled.",
	"instance-terminated-by-user":           "Spot instance was terminated by the user.",
	"instance-terminated-no-capacity":       "Spot instance was terminated because there was no capacity available.",
	"instance-terminated-by-service":        "Spot instance was terminated by the service.",
}

type xmlSpotRequest struct {
	ID        string `xml:"spotInstanceRequestId"`
	SpotPrice string `xml:"spotPrice"`
	Type      string `xml:"type"`
	State     string `xml:"state"`
	Status    struct {
		Code       string `xml:"code"`
		UpdateTime string `xml:"updateTime"`
		Message    string `xml:"message"`
	} `xml:"status"`
	LaunchSpecification struct {
		ImageID      string     `xml:"imageId"`
		InstanceType string     `xml:"instanceType"`
		Groups       []xmlGroup `xml:"groupSet>item"`
		Placement    struct {
			AvailabilityZone string `xml:"availabilityZone"`
		} `xml:"placement"`
		SubnetID string `xml:"subnetId,omitempty"`
	} `xml:"launchSpecification"`
	InstanceID                   string   `xml:"instanceId,omitempty"`
	CreateTime                   string   `xml:"createTime"`
	ProductDescription           string   `xml:"productDescription"`
	Tags                         []xmlTag `xml:"tagSet>item"`
	LaunchedAvailabilityZone     string   `xml:"launchedAvailabilityZone,omitempty"`
	InstanceInterruptionBehavior string   `xml:"instanceInterruptionBehavior"`
}

func (s *Server) spotRequestXML(r *spotRequest) xmlSpotRequest {
	var x xmlSpotRequest
	x.ID, x.SpotPrice, x.Type, x.State = r.id, r.maxPrice, "one-time", r.state
	x.Status.Code, x.Status.UpdateTime, x.Status.Message = r.statusCode, r.statusTime.UTC().Format(timeFormat), spotStatusMessages[r.statusCode]
	x.LaunchSpecification.ImageID = r.imageID
	x.LaunchSpecification.InstanceType = r.instanceType
	x.LaunchSpecification.Groups = s.groupSet(r.groups)
	x.LaunchSpecification.Placement.AvailabilityZone = r.az
	x.LaunchSpecification.SubnetID = r.subnetID
	x.InstanceID = r.instanceID
	x.CreateTime = r.created.UTC().Format(timeFormat)
	x.ProductDescription = "Linux/UNIX"
	x.Tags = tagSet(r.tags)
	if r.instanceID != "" {
		x.LaunchedAvailabilityZone = r.az
	}
	x.InstanceInterruptionBehavior = "terminate"
	return x
}

// spotRequestsByID resolves SpotInstanceRequestId.N in the request's region.
func (s *Server) spotRequestsByID(r *request, ids []string) ([]*spotRequest, error) {
	var out []*spotRequest
	var missing []string
	for _, id := range ids {
		if !strings.HasPrefix(id, "sir-") {
			return nil, errorf("InvalidSpotInstanceRequestID.Malformed", "Invalid id: \"%s\"", id)
		}
		sr, ok := s.state.spot[id]
		if !ok || sr.region != r.region {
			missing = append(missing, id)
			continue
		}
		out = append(out, sr)
	}
	if len(missing) > 0 {
		return nil, notFound("InvalidSpotInstanceRequestID.NotFound", "spot instance request ID", missing)
	}
	return out, nil
}

func (s *Server) describeSpotInstanceRequests(r *request) (any, error) {
	fs, err := r.filters("state", "status-code", "instance-id", "spot-instance-request-id", "type",
		"launched-availability-zone", "launch.instance-type", "launch.image-id", "product-description", "tag:", "tag-key", "tag-value")
	if err != nil {
		return nil, err
	}
	ids := r.list("SpotInstanceRequestId")
	var candidates []*spotRequest
	if len(ids) > 0 {
		if candidates, err = s.spotRequestsByID(r, ids); err != nil {
			return nil, err
		}
	} else {
		for _, id := range s.state.spotOrder {
			if sr := s.state.spot[id]; sr.region == r.region {
				candidates = append(candidates, sr)
			}
		}
	}
	var match []*spotRequest
	for _, sr := range candidates {
		ok := matchFilters(fs, func(name string) []string {
			if v, ok := tagAttr(sr.tags, name); ok {
				return v
			}
			return map[string][]string{
				"state":                      {sr.state},
				"status-code":                {sr.statusCode},
				"instance-id":                {sr.instanceID},
				"spot-instance-request-id":   {sr.id},
				"type":                       {"one-time"},
				"launched-availability-zone": {sr.az},
				"launch.instance-type":       {sr.instanceType},
				"launch.image-id":            {sr.imageID},
				"product-description":        {"Linux/UNIX"},
			}[name]
		})
		if ok {
			match = append(match, sr)
		}
	}
	start, end, next, err := r.page(len(match), 5, 1000)
	if err != nil {
		return nil, err
	}
	out := &struct {
		meta
		Requests  []xmlSpotRequest `xml:"spotInstanceRequestSet>item"`
		NextToken string           `xml:"nextToken,omitempty"`
	}{NextToken: next}
	for _, sr := range match[start:end] {
		out.Requests = append(out.Requests, s.spotRequestXML(sr))
	}
	return out, nil
}

func (s *Server) cancelSpotInstanceRequests(r *request) (any, error) {
	ids := r.list("SpotInstanceRequestId")
	if len(ids) == 0 {
		return nil, errorf("MissingParameter", "The request must contain the parameter SpotInstanceRequestId")
	}
	reqs, err := s.spotRequestsByID(r, ids)
	if err != nil {
		return nil, err
	}
	type cancelled struct {
		ID    string `xml:"spotInstanceRequestId"`
		State string `xml:"state"`
	}
	out := &struct {
		meta
		Requests []cancelled `xml:"spotInstanceRequestSet>item"`
	}{}
	for _, sr := range reqs {
		switch sr.state {
		case "open":
			sr.state, sr.statusCode, sr.statusTime = "cancelled", "canceled-before-fulfillment", r.now
		case "active":
			sr.state, sr.statusCode, sr.statusTime = "cancelled", "request-canceled-and-instance-running", r.now
		}
		out.Requests = append(out.Requests, cancelled{ID: sr.id, State: sr.state})
	}
	return out, nil
}

// AddSpotRequest puts a spot request there directly, as one left open with
// no instance (EC2 found no capacity and the request waits); it returns its
// ID. State defaults to open, Region to the first region.
func (s *Server) AddSpotRequest(r SpotRequest) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.state
	if r.Region == "" {
		r.Region = s.opts.Regions[0]
	}
	if r.State == "" {
		r.State = "open"
	}
	code := "pending-fulfillment"
	if r.State != "open" {
		code = "fulfilled"
	}
	sr := &spotRequest{
		id: c.newID("sir-", 8), region: r.Region, state: r.State, statusCode: code,
		statusTime: s.now(), instanceID: r.InstanceID, created: s.now(), tags: cloneTags(r.Tags),
		instanceType: "t3.micro", az: zonesOf(r.Region)[0].name,
	}
	c.spot[sr.id] = sr
	c.spotOrder = append(c.spotOrder, sr.id)
	return sr.id
}
