package ec2fake

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// This file is the network: each region's default VPC with one default
// subnet per zone, and security groups.

// rule is one security group rule with one peer: a CIDR or a group.
type rule struct {
	protocol string // tcp, udp, icmp or -1 (all)
	from, to int    // -1 for protocol -1
	cidr     string
	group    string
}

func allTraffic() rule { return rule{protocol: "-1", from: -1, to: -1, cidr: "0.0.0.0/0"} }

func (r rule) peer() string {
	if r.group != "" {
		return r.group
	}
	return r.cidr
}

// String is the rule as SecurityGroup.Ingress lists it.
func (r rule) String() string {
	if r.protocol == "-1" {
		return "-1 all " + r.peer()
	}
	return fmt.Sprintf("%s %d-%d %s", r.protocol, r.from, r.to, r.peer())
}

type securityGroup struct {
	id, name, description, vpcID, region string
	tags                                 map[string]string
	ingress, egress                      []rule
}

func (g *securityGroup) snapshot() SecurityGroup {
	out := SecurityGroup{ID: g.id, Name: g.name, VpcID: g.vpcID, Region: g.region, Tags: cloneTags(g.tags)}
	for _, r := range g.ingress {
		out.Ingress = append(out.Ingress, r.String())
	}
	return out
}

func (c *cloud) defaultGroup(region string) *securityGroup {
	v := c.vpcs[region]
	for _, g := range c.groups {
		if v != nil && g.vpcID == v.id && g.name == "default" {
			return g
		}
	}
	return nil
}

func (c *cloud) groupByID(region, id string) *securityGroup {
	for _, g := range c.groups {
		if g.id == id && g.region == region {
			return g
		}
	}
	return nil
}

func (c *cloud) groupByName(vpcID, name string) *securityGroup {
	for _, g := range c.groups {
		if g.vpcID == vpcID && g.name == name {
			return g
		}
	}
	return nil
}

type xmlGroup struct {
	GroupID   string `xml:"groupId"`
	GroupName string `xml:"groupName"`
}

func (s *Server) groupSet(ids []string) []xmlGroup {
	var out []xmlGroup
	for _, id := range ids {
		x := xmlGroup{GroupID: id}
		for _, g := range s.state.groups {
			if g.id == id {
				x.GroupName = g.name
			}
		}
		out = append(out, x)
	}
	return out
}

func (s *Server) describeVpcs(r *request) (any, error) {
	fs, err := r.filters("vpc-id", "is-default", "isDefault", "state", "cidr", "cidr-block-association.cidr-block", "owner-id", "tag:", "tag-key", "tag-value")
	if err != nil {
		return nil, err
	}
	v := s.state.vpcs[r.region]
	var missing []string
	for _, id := range r.list("VpcId") {
		if id != v.id {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		return nil, notFound("InvalidVpcID.NotFound", "vpc ID", missing)
	}
	type xmlVpc struct {
		VpcID           string   `xml:"vpcId"`
		OwnerID         string   `xml:"ownerId"`
		State           string   `xml:"state"`
		CidrBlock       string   `xml:"cidrBlock"`
		DhcpOptionsID   string   `xml:"dhcpOptionsId"`
		InstanceTenancy string   `xml:"instanceTenancy"`
		IsDefault       bool     `xml:"isDefault"`
		Tags            []xmlTag `xml:"tagSet>item"`
	}
	var match []xmlVpc
	ok := matchFilters(fs, func(name string) []string {
		if vals, ok := tagAttr(nil, name); ok {
			return vals
		}
		return map[string][]string{"vpc-id": {v.id}, "is-default": {"true"}, "isDefault": {"true"}, "state": {"available"},
			"cidr": {v.cidr}, "cidr-block-association.cidr-block": {v.cidr}, "owner-id": {Account}}[name]
	})
	if ok {
		match = append(match, xmlVpc{VpcID: v.id, OwnerID: Account, State: "available", CidrBlock: v.cidr,
			DhcpOptionsID: "dopt-" + hashHex("dopt/"+v.region, 17), InstanceTenancy: "default", IsDefault: true})
	}
	start, end, next, err := r.page(len(match), 5, 1000)
	if err != nil {
		return nil, err
	}
	return &struct {
		meta
		Vpcs      []xmlVpc `xml:"vpcSet>item"`
		NextToken string   `xml:"nextToken,omitempty"`
	}{Vpcs: match[start:end], NextToken: next}, nil
}

func (s *Server) describeSubnets(r *request) (any, error) {
	fs, err := r.filters("subnet-id", "vpc-id", "availability-zone", "availability-zone-id", "availabilityZone",
		"default-for-az", "defaultForAz", "state", "cidr-block", "owner-id", "tag:", "tag-key", "tag-value")
	if err != nil {
		return nil, err
	}
	var candidates []*subnet
	if ids := r.list("SubnetId"); len(ids) > 0 {
		var missing []string
		for _, id := range ids {
			sn, ok := s.state.subnetByID(r.region, id)
			if !ok {
				missing = append(missing, id)
				continue
			}
			candidates = append(candidates, sn)
		}
		if len(missing) > 0 {
			return nil, notFound("InvalidSubnetID.NotFound", "subnet ID", missing)
		}
	} else {
		for _, sn := range s.state.subnets {
			if sn.zone.region == r.region {
				candidates = append(candidates, sn)
			}
		}
	}
	type xmlSubnet struct {
		SubnetID                string   `xml:"subnetId"`
		SubnetArn               string   `xml:"subnetArn"`
		State                   string   `xml:"state"`
		VpcID                   string   `xml:"vpcId"`
		OwnerID                 string   `xml:"ownerId"`
		CidrBlock               string   `xml:"cidrBlock"`
		AvailableIPAddressCount int      `xml:"availableIpAddressCount"`
		AvailabilityZone        string   `xml:"availabilityZone"`
		AvailabilityZoneID      string   `xml:"availabilityZoneId"`
		DefaultForAz            bool     `xml:"defaultForAz"`
		MapPublicIPOnLaunch     bool     `xml:"mapPublicIpOnLaunch"`
		Tags                    []xmlTag `xml:"tagSet>item"`
	}
	var match []xmlSubnet
	for _, sn := range candidates {
		ok := matchFilters(fs, func(name string) []string {
			if vals, ok := tagAttr(nil, name); ok {
				return vals
			}
			return map[string][]string{"subnet-id": {sn.id}, "vpc-id": {sn.vpcID}, "availability-zone": {sn.zone.name},
				"availabilityZone": {sn.zone.name}, "availability-zone-id": {sn.zone.id}, "default-for-az": {"true"},
				"defaultForAz": {"true"}, "state": {"available"}, "cidr-block": {sn.cidr}, "owner-id": {Account}}[name]
		})
		if ok {
			match = append(match, xmlSubnet{SubnetID: sn.id, SubnetArn: arn(r.region, "subnet/"+sn.id), State: "available",
				VpcID: sn.vpcID, OwnerID: Account, CidrBlock: sn.cidr, AvailableIPAddressCount: 4091,
				AvailabilityZone: sn.zone.name, AvailabilityZoneID: sn.zone.id, DefaultForAz: true, MapPublicIPOnLaunch: true})
		}
	}
	start, end, next, err := r.page(len(match), 5, 1000)
	if err != nil {
		return nil, err
	}
	return &struct {
		meta
		Subnets   []xmlSubnet `xml:"subnetSet>item"`
		NextToken string      `xml:"nextToken,omitempty"`
	}{Subnets: match[start:end], NextToken: next}, nil
}

func arn(region, resource string) string {
	return "arn:aws:ec2:" + region + ":" + Account + ":" + resource
}

type xmlIPPermission struct {
	IPProtocol string `xml:"ipProtocol"`
	FromPort   *int   `xml:"fromPort,omitempty"`
	ToPort     *int   `xml:"toPort,omitempty"`
	Groups     []struct {
		UserID  string `xml:"userId"`
		GroupID string `xml:"groupId"`
	} `xml:"groups>item"`
	IPRanges []struct {
		CidrIP string `xml:"cidrIp"`
	} `xml:"ipRanges>item"`
}

// permissions renders rules as EC2 does: one permission per protocol and
// port range, with all its peers.
func permissions(rules []rule) []xmlIPPermission {
	var out []xmlIPPermission
	index := map[string]int{}
	for _, r := range rules {
		k := fmt.Sprintf("%s/%d/%d", r.protocol, r.from, r.to)
		i, ok := index[k]
		if !ok {
			p := xmlIPPermission{IPProtocol: r.protocol}
			if r.protocol != "-1" {
				from, to := r.from, r.to
				p.FromPort, p.ToPort = &from, &to
			}
			out = append(out, p)
			i = len(out) - 1
			index[k] = i
		}
		if r.group != "" {
			out[i].Groups = append(out[i].Groups, struct {
				UserID  string `xml:"userId"`
				GroupID string `xml:"groupId"`
			}{Account, r.group})
		} else {
			out[i].IPRanges = append(out[i].IPRanges, struct {
				CidrIP string `xml:"cidrIp"`
			}{r.cidr})
		}
	}
	return out
}

func (s *Server) describeSecurityGroups(r *request) (any, error) {
	fs, err := r.filters("group-name", "group-id", "vpc-id", "description", "owner-id", "tag:", "tag-key", "tag-value")
	if err != nil {
		return nil, err
	}
	ids, names := r.list("GroupId"), r.list("GroupName")
	var candidates []*securityGroup
	if len(ids) > 0 || len(names) > 0 {
		var missing []string
		for _, id := range ids {
			g := s.state.groupByID(r.region, id)
			if g == nil {
				missing = append(missing, id)
				continue
			}
			candidates = append(candidates, g)
		}
		if len(missing) > 0 {
			return nil, notFound("InvalidGroup.NotFound", "security group", missing)
		}
		v := s.state.vpcs[r.region]
		for _, name := range names {
			g := s.state.groupByName(v.id, name)
			if g == nil {
				return nil, errorf("InvalidGroup.NotFound", "The security group '%s' does not exist in default VPC '%s'", name, v.id)
			}
			if !slices.Contains(candidates, g) {
				candidates = append(candidates, g)
			}
		}
	} else {
		for _, g := range s.state.groups {
			if g.region == r.region {
				candidates = append(candidates, g)
			}
		}
	}
	type xmlSecurityGroup struct {
		OwnerID          string            `xml:"ownerId"`
		GroupID          string            `xml:"groupId"`
		GroupName        string            `xml:"groupName"`
		GroupDescription string            `xml:"groupDescription"`
		VpcID            string            `xml:"vpcId"`
		SecurityGroupArn string            `xml:"securityGroupArn"`
		Ingress          []xmlIPPermission `xml:"ipPermissions>item"`
		Egress           []xmlIPPermission `xml:"ipPermissionsEgress>item"`
		Tags             []xmlTag          `xml:"tagSet>item"`
	}
	var match []xmlSecurityGroup
	for _, g := range candidates {
		ok := matchFilters(fs, func(name string) []string {
			if vals, ok := tagAttr(g.tags, name); ok {
				return vals
			}
			return map[string][]string{"group-name": {g.name}, "group-id": {g.id}, "vpc-id": {g.vpcID},
				"description": {g.description}, "owner-id": {Account}}[name]
		})
		if ok {
			match = append(match, xmlSecurityGroup{OwnerID: Account, GroupID: g.id, GroupName: g.name,
				GroupDescription: g.description, VpcID: g.vpcID, SecurityGroupArn: arn(g.region, "security-group/"+g.id),
				Ingress: permissions(g.ingress), Egress: permissions(g.egress), Tags: tagSet(g.tags)})
		}
	}
	start, end, next, err := r.page(len(match), 5, 1000)
	if err != nil {
		return nil, err
	}
	return &struct {
		meta
		Groups    []xmlSecurityGroup `xml:"securityGroupInfo>item"`
		NextToken string             `xml:"nextToken,omitempty"`
	}{Groups: match[start:end], NextToken: next}, nil
}

func (s *Server) createSecurityGroup(r *request) (any, error) {
	name, desc := r.str("GroupName"), r.str("GroupDescription")
	if name == "" {
		return nil, errorf("MissingParameter", "The request must contain the parameter groupName")
	}
	if desc == "" {
		return nil, errorf("MissingParameter", "The request must contain the parameter groupDescription")
	}
	if strings.HasPrefix(name, "sg-") {
		return nil, errorf("InvalidParameterValue", "Group names may not be in the format sg-*.")
	}
	if len(name) > 255 || len(desc) > 255 {
		return nil, errorf("InvalidParameterValue", "Value for parameter groupName or groupDescription is too long (at most 255 characters).")
	}
	v := s.state.vpcs[r.region]
	if id := r.str("VpcId"); id != "" && id != v.id {
		return nil, notFound("InvalidVpcID.NotFound", "vpc ID", []string{id})
	}
	specs, err := r.tagSpecifications("security-group")
	if err != nil {
		return nil, err
	}
	if s.state.groupByName(v.id, name) != nil {
		return nil, errorf("InvalidGroup.Duplicate", "The security group '%s' already exists for VPC '%s'", name, v.id)
	}
	g := &securityGroup{id: s.state.newID("sg-", 17), name: name, description: desc, vpcID: v.id, region: r.region,
		tags: cloneTags(specs["security-group"]), egress: []rule{allTraffic()}}
	s.state.groups = append(s.state.groups, g)
	return &struct {
		meta
		GroupID          string   `xml:"groupId"`
		SecurityGroupArn string   `xml:"securityGroupArn"`
		Tags             []xmlTag `xml:"tagSet>item"`
	}{GroupID: g.id, SecurityGroupArn: arn(g.region, "security-group/"+g.id), Tags: tagSet(g.tags)}, nil
}

func (s *Server) authorizeSecurityGroupIngress(r *request) (any, error) { return s.authorize(r, false) }

func (s *Server) authorizeSecurityGroupEgress(r *request) (any, error) { return s.authorize(r, true) }

// authorize adds rules to a group: all of them, or none when one is invalid
// or already there.
func (s *Server) authorize(r *request, egress bool) (any, error) {
	var g *securityGroup
	switch id, name := r.str("GroupId"), r.str("GroupName"); {
	case id != "":
		if g = s.state.groupByID(r.region, id); g == nil {
			return nil, notFound("InvalidGroup.NotFound", "security group", []string{id})
		}
	case name != "" && !egress:
		v := s.state.vpcs[r.region]
		if g = s.state.groupByName(v.id, name); g == nil {
			return nil, errorf("InvalidGroup.NotFound", "The security group '%s' does not exist in default VPC '%s'", name, v.id)
		}
	default:
		return nil, errorf("MissingParameter", "The request must contain the parameter groupId")
	}
	rules, err := s.readRules(r, g)
	if err != nil {
		return nil, err
	}
	if len(rules) == 0 {
		return nil, errorf("MissingParameter", "The request must contain the parameter ipPermissions")
	}
	existing := &g.ingress
	if egress {
		existing = &g.egress
	}
	for i, ru := range rules {
		if slices.Contains(*existing, ru) || slices.Contains(rules[:i], ru) {
			return nil, errorf("InvalidPermission.Duplicate", "the specified rule \"peer: %s, %s, from port: %d, to port: %d, ALLOW\" already exists",
				ru.peer(), strings.ToUpper(ru.protocol), ru.from, ru.to)
		}
	}
	*existing = append(*existing, rules...)

	type xmlRule struct {
		RuleID     string `xml:"securityGroupRuleId"`
		GroupID    string `xml:"groupId"`
		GroupOwner string `xml:"groupOwnerId"`
		IsEgress   bool   `xml:"isEgress"`
		IPProtocol string `xml:"ipProtocol"`
		FromPort   int    `xml:"fromPort"`
		ToPort     int    `xml:"toPort"`
		CidrIPv4   string `xml:"cidrIpv4,omitempty"`
		Referenced *struct {
			GroupID string `xml:"groupId"`
			UserID  string `xml:"userId"`
		} `xml:"referencedGroupInfo,omitempty"`
	}
	out := &struct {
		meta
		Return bool      `xml:"return"`
		Rules  []xmlRule `xml:"securityGroupRuleSet>item"`
	}{Return: true}
	for _, ru := range rules {
		x := xmlRule{RuleID: s.state.newID("sgr-", 17), GroupID: g.id, GroupOwner: Account, IsEgress: egress,
			IPProtocol: ru.protocol, FromPort: ru.from, ToPort: ru.to, CidrIPv4: ru.cidr}
		if ru.group != "" {
			x.Referenced = &struct {
				GroupID string `xml:"groupId"`
				UserID  string `xml:"userId"`
			}{ru.group, Account}
		}
		out.Rules = append(out.Rules, x)
	}
	return out, nil
}

// readRules reads IpPermissions.N (or the older top-level CidrIp,
// IpProtocol, FromPort, ToPort) into one rule per peer.
func (s *Server) readRules(r *request, g *securityGroup) ([]rule, error) {
	var prefixes []string
	for _, n := range r.indices("IpPermissions") {
		prefixes = append(prefixes, "IpPermissions."+strconv.Itoa(n)+".")
	}
	if len(prefixes) == 0 && r.has("IpProtocol") {
		prefixes = []string{""}
	}
	var out []rule
	for _, p := range prefixes {
		proto, err := normalizeProtocol(r.str(p + "IpProtocol"))
		if err != nil {
			return nil, err
		}
		from, to := -1, -1
		if proto != "-1" {
			if !r.has(p+"FromPort") || !r.has(p+"ToPort") {
				return nil, errorf("InvalidParameterValue", "Invalid value 'Must specify both from and to ports with TCP/UDP.' for portRange")
			}
			if from, err = r.integer(p+"FromPort", -1); err != nil {
				return nil, err
			}
			if to, err = r.integer(p+"ToPort", -1); err != nil {
				return nil, err
			}
			if proto != "icmp" && (from < 0 || to > 65535 || from > to) {
				return nil, errorf("InvalidParameterValue", "Invalid port range (%d, %d)", from, to)
			}
		}
		base := rule{protocol: proto, from: from, to: to}
		var cidrs []string
		if p == "" {
			if c := r.str("CidrIp"); c != "" {
				cidrs = append(cidrs, c)
			}
		}
		for _, n := range r.indices(p + "IpRanges") {
			cidrs = append(cidrs, r.str(fmt.Sprintf("%sIpRanges.%d.CidrIp", p, n)))
		}
		for _, c := range cidrs {
			if !validCIDR(c) {
				return nil, errorf("InvalidParameterValue", "CIDR block %s is malformed", c)
			}
			ru := base
			ru.cidr = c
			out = append(out, ru)
		}
		for _, n := range r.indices(p + "Groups") {
			q := fmt.Sprintf("%sGroups.%d.", p, n)
			var peer *securityGroup
			if id := r.str(q + "GroupId"); id != "" {
				peer = s.state.groupByID(r.region, id)
				if peer == nil {
					return nil, notFound("InvalidGroup.NotFound", "security group", []string{id})
				}
			} else if name := r.str(q + "GroupName"); name != "" {
				peer = s.state.groupByName(g.vpcID, name)
				if peer == nil {
					return nil, errorf("InvalidGroup.NotFound", "The security group '%s' does not exist in VPC '%s'", name, g.vpcID)
				}
			} else {
				return nil, errorf("MissingParameter", "The request must contain the parameter groupId")
			}
			ru := base
			ru.group = peer.id
			out = append(out, ru)
		}
	}
	return out, nil
}

func normalizeProtocol(p string) (string, error) {
	switch strings.ToLower(p) {
	case "tcp", "6":
		return "tcp", nil
	case "udp", "17":
		return "udp", nil
	case "icmp", "1":
		return "icmp", nil
	case "-1", "all":
		return "-1", nil
	}
	return "", errorf("InvalidParameterValue", "Invalid value '%s' for IP protocol. Unknown protocol.", p)
}

func validCIDR(c string) bool {
	p, err := netip.ParsePrefix(c)
	return err == nil && p.Addr().Is4()
}
