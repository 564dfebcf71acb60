package ec2fake

import (
	"slices"
	"strconv"
	"strings"
	"time"
)

// This file answers the questions about what the cloud offers: regions,
// zones, instance types and their offerings, spot prices and images.

func (s *Server) describeRegions(r *request) (any, error) {
	fs, err := r.filters("region-name", "endpoint", "opt-in-status")
	if err != nil {
		return nil, err
	}
	all := slices.Clone(s.opts.Regions)
	if r.boolean("AllRegions") {
		for _, k := range knownRegions {
			if !slices.Contains(all, k) {
				all = append(all, k)
			}
		}
	}
	names := r.list("RegionName")
	for _, n := range names {
		if !slices.Contains(all, n) {
			return nil, errorf("InvalidParameterValue", "Invalid region: %s", n)
		}
	}
	type xmlRegion struct {
		Name        string `xml:"regionName"`
		Endpoint    string `xml:"regionEndpoint"`
		OptInStatus string `xml:"optInStatus"`
	}
	out := &struct {
		meta
		Regions []xmlRegion `xml:"regionInfo>item"`
	}{}
	for _, name := range all {
		if len(names) > 0 && !slices.Contains(names, name) {
			continue
		}
		x := xmlRegion{Name: name, Endpoint: "ec2." + name + ".amazonaws.com", OptInStatus: "opt-in-not-required"}
		if !slices.Contains(s.opts.Regions, name) {
			x.OptInStatus = "not-opted-in"
		}
		ok := matchFilters(fs, func(f string) []string {
			return map[string][]string{"region-name": {x.Name}, "endpoint": {x.Endpoint}, "opt-in-status": {x.OptInStatus}}[f]
		})
		if ok {
			out.Regions = append(out.Regions, x)
		}
	}
	return out, nil
}

func (s *Server) describeAvailabilityZones(r *request) (any, error) {
	fs, err := r.filters("zone-name", "zone-id", "state", "region-name", "zone-type", "opt-in-status", "group-name")
	if err != nil {
		return nil, err
	}
	zones := zonesOf(r.region)
	names, ids := r.list("ZoneName"), r.list("ZoneId")
	for _, n := range names {
		if !slices.ContainsFunc(zones, func(z zone) bool { return z.name == n }) {
			return nil, errorf("InvalidParameterValue", "The zone '%s' does not exist.", n)
		}
	}
	for _, n := range ids {
		if !slices.ContainsFunc(zones, func(z zone) bool { return z.id == n }) {
			return nil, errorf("InvalidParameterValue", "The zone ID '%s' does not exist.", n)
		}
	}
	type xmlZone struct {
		ZoneName           string `xml:"zoneName"`
		ZoneID             string `xml:"zoneId"`
		ZoneState          string `xml:"zoneState"`
		RegionName         string `xml:"regionName"`
		ZoneType           string `xml:"zoneType"`
		OptInStatus        string `xml:"optInStatus"`
		GroupName          string `xml:"groupName"`
		NetworkBorderGroup string `xml:"networkBorderGroup"`
	}
	out := &struct {
		meta
		Zones []xmlZone `xml:"availabilityZoneInfo>item"`
	}{}
	for _, z := range zones {
		if (len(names) > 0 || len(ids) > 0) && !slices.Contains(names, z.name) && !slices.Contains(ids, z.id) {
			continue
		}
		ok := matchFilters(fs, func(f string) []string {
			return map[string][]string{"zone-name": {z.name}, "zone-id": {z.id}, "state": {"available"},
				"region-name": {z.region}, "zone-type": {"availability-zone"}, "opt-in-status": {"opt-in-not-required"},
				"group-name": {z.region}}[f]
		})
		if ok {
			out.Zones = append(out.Zones, xmlZone{ZoneName: z.name, ZoneID: z.id, ZoneState: "available", RegionName: z.region,
				ZoneType: "availability-zone", OptInStatus: "opt-in-not-required", GroupName: z.region, NetworkBorderGroup: z.region})
		}
	}
	return out, nil
}

func (s *Server) describeInstanceTypeOfferings(r *request) (any, error) {
	fs, err := r.filters("instance-type", "location")
	if err != nil {
		return nil, err
	}
	lt := r.str("LocationType")
	if lt == "" {
		lt = "region"
	}
	var locations []string
	switch lt {
	case "region":
		locations = []string{r.region}
	case "availability-zone", "availability-zone-id":
		for _, z := range zonesOf(r.region) {
			if lt == "availability-zone" {
				locations = append(locations, z.name)
			} else {
				locations = append(locations, z.id)
			}
		}
	default:
		return nil, errorf("InvalidParameterValue", "Invalid value '%s' for LocationType.", lt)
	}
	type xmlOffering struct {
		InstanceType string `xml:"instanceType"`
		LocationType string `xml:"locationType"`
		Location     string `xml:"location"`
	}
	var match []xmlOffering
	for _, t := range s.opts.Catalog {
		if !t.offeredIn(r.region) {
			continue
		}
		for _, loc := range locations {
			ok := matchFilters(fs, func(f string) []string {
				return map[string][]string{"instance-type": {t.Name}, "location": {loc}}[f]
			})
			if ok {
				match = append(match, xmlOffering{InstanceType: t.Name, LocationType: lt, Location: loc})
			}
		}
	}
	start, end, next, err := r.page(len(match), 5, 1000)
	if err != nil {
		return nil, err
	}
	return &struct {
		meta
		Offerings []xmlOffering `xml:"instanceTypeOfferingSet>item"`
		NextToken string        `xml:"nextToken,omitempty"`
	}{Offerings: match[start:end], NextToken: next}, nil
}

type xmlGPU struct {
	Name         string `xml:"name"`
	Manufacturer string `xml:"manufacturer"`
	Count        int    `xml:"count"`
	MemoryMiB    int64  `xml:"memoryInfo>sizeInMiB"`
}

type xmlInstanceType struct {
	InstanceType      string   `xml:"instanceType"`
	CurrentGeneration bool     `xml:"currentGeneration"`
	UsageClasses      []string `xml:"supportedUsageClasses>item"`
	RootDeviceTypes   []string `xml:"supportedRootDeviceTypes>item"`
	Virtualization    []string `xml:"supportedVirtualizationTypes>item"`
	BareMetal         bool     `xml:"bareMetal"`
	Hypervisor        string   `xml:"hypervisor"`
	Architectures     []string `xml:"processorInfo>supportedArchitectures>item"`
	DefaultVCPUs      int      `xml:"vCpuInfo>defaultVCpus"`
	MemoryMiB         int64    `xml:"memoryInfo>sizeInMiB"`
	GPUInfo           *struct {
		GPUs        []xmlGPU `xml:"gpus>item"`
		TotalMemory int64    `xml:"totalGpuMemoryInMiB"`
	} `xml:"gpuInfo,omitempty"`
	SupportedInRegion bool `xml:"supportedInRegion"`
}

func instanceTypeXML(t InstanceType) xmlInstanceType {
	x := xmlInstanceType{
		InstanceType: t.Name, CurrentGeneration: true, UsageClasses: []string{"on-demand"},
		RootDeviceTypes: []string{"ebs"}, Virtualization: []string{"hvm"}, Hypervisor: "nitro",
		Architectures: []string{t.Arch}, DefaultVCPUs: t.VCPUs, MemoryMiB: t.MemoryMiB, SupportedInRegion: true,
	}
	if t.Spot {
		x.UsageClasses = append(x.UsageClasses, "spot")
	}
	if len(t.GPUs) > 0 {
		x.GPUInfo = &struct {
			GPUs        []xmlGPU `xml:"gpus>item"`
			TotalMemory int64    `xml:"totalGpuMemoryInMiB"`
		}{}
		for _, g := range t.GPUs {
			x.GPUInfo.GPUs = append(x.GPUInfo.GPUs, xmlGPU(g))
			x.GPUInfo.TotalMemory += int64(g.Count) * g.MemoryMiB
		}
	}
	return x
}

func (s *Server) describeInstanceTypes(r *request) (any, error) {
	fs, err := r.filters("instance-type", "processor-info.supported-architecture", "supported-usage-class",
		"vcpu-info.default-vcpus", "memory-info.size-in-mib", "current-generation", "bare-metal")
	if err != nil {
		return nil, err
	}
	names := r.list("InstanceType")
	var missing []string
	for _, n := range names {
		t, ok := s.instanceType(n)
		if !ok || !t.offeredIn(r.region) {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		return nil, errorf("InvalidInstanceType", "The following supplied instance types do not exist: [%s]", strings.Join(missing, ", "))
	}
	var match []xmlInstanceType
	for _, t := range s.opts.Catalog {
		if !t.offeredIn(r.region) || len(names) > 0 && !slices.Contains(names, t.Name) {
			continue
		}
		classes := []string{"on-demand"}
		if t.Spot {
			classes = append(classes, "spot")
		}
		ok := matchFilters(fs, func(f string) []string {
			return map[string][]string{"instance-type": {t.Name}, "processor-info.supported-architecture": {t.Arch},
				"supported-usage-class": classes, "vcpu-info.default-vcpus": {strconv.Itoa(t.VCPUs)},
				"memory-info.size-in-mib": {strconv.FormatInt(t.MemoryMiB, 10)}, "current-generation": {"true"},
				"bare-metal": {"false"}}[f]
		})
		if ok {
			match = append(match, instanceTypeXML(t))
		}
	}
	start, end, next, err := r.page(len(match), 5, 100)
	if err != nil {
		return nil, err
	}
	return &struct {
		meta
		Types     []xmlInstanceType `xml:"instanceTypeSet>item"`
		NextToken string            `xml:"nextToken,omitempty"`
	}{Types: match[start:end], NextToken: next}, nil
}

// spotProducts are the product descriptions spot prices are published for.
var spotProducts = []string{"Linux/UNIX", "Linux/UNIX (Amazon VPC)"}

func (s *Server) describeSpotPriceHistory(r *request) (any, error) {
	fs, err := r.filters("instance-type", "product-description", "availability-zone", "spot-price", "timestamp")
	if err != nil {
		return nil, err
	}
	if _, err := r.timestamp("StartTime"); err != nil {
		return nil, err
	}
	end, err := r.timestamp("EndTime")
	if err != nil {
		return nil, err
	}
	types, products := r.list("InstanceType"), r.list("ProductDescription")
	for _, p := range products {
		if !slices.Contains(spotProducts, p) {
			return nil, errorf("InvalidParameterValue", "Invalid value '%s' for ProductDescription.", p)
		}
	}
	if len(products) == 0 {
		products = spotProducts[:1]
	}
	zoneName := r.str("AvailabilityZone")
	// The price has not changed for the last hour; an EndTime before that
	// finds nothing.
	stamp := r.now.UTC().Truncate(time.Hour).Add(-time.Hour)
	if !end.IsZero() && end.Before(stamp) {
		stamp = time.Time{}
	}
	type xmlPrice struct {
		InstanceType       string `xml:"instanceType"`
		ProductDescription string `xml:"productDescription"`
		SpotPrice          string `xml:"spotPrice"`
		Timestamp          string `xml:"timestamp"`
		AvailabilityZone   string `xml:"availabilityZone"`
	}
	var match []xmlPrice
	for _, t := range s.opts.Catalog {
		if stamp.IsZero() || !t.Spot || !t.offeredIn(r.region) || len(types) > 0 && !slices.Contains(types, t.Name) {
			continue
		}
		for _, p := range products {
			for _, z := range zonesOf(r.region) {
				if zoneName != "" && zoneName != z.name {
					continue
				}
				x := xmlPrice{InstanceType: t.Name, ProductDescription: p, SpotPrice: formatPrice(t.SpotPrice),
					Timestamp: stamp.Format(timeFormat), AvailabilityZone: z.name}
				ok := matchFilters(fs, func(f string) []string {
					return map[string][]string{"instance-type": {t.Name}, "product-description": {p},
						"availability-zone": {z.name}, "spot-price": {x.SpotPrice}, "timestamp": {x.Timestamp}}[f]
				})
				if ok {
					match = append(match, x)
				}
			}
		}
	}
	start, stop, next, err := r.page(len(match), 5, 1000)
	if err != nil {
		return nil, err
	}
	return &struct {
		meta
		Prices    []xmlPrice `xml:"spotPriceHistorySet>item"`
		NextToken string     `xml:"nextToken,omitempty"`
	}{Prices: match[start:stop], NextToken: next}, nil
}

func formatPrice(p float64) string { return strconv.FormatFloat(p, 'f', 6, 64) }

func (s *Server) describeImages(r *request) (any, error) {
	fs, err := r.filters("name", "architecture", "state", "image-id", "owner-id", "owner-alias", "image-type",
		"is-public", "root-device-type", "virtualization-type", "description", "tag:", "tag-key", "tag-value")
	if err != nil {
		return nil, err
	}
	owners, ids := r.list("Owner"), r.list("ImageId")
	for _, id := range ids {
		if !strings.HasPrefix(id, "ami-") {
			return nil, errorf("InvalidAMIID.Malformed", "Invalid id: \"%s\" (expecting \"ami-...\")", id)
		}
		if _, ok := imageByID(r.region, id); !ok {
			return nil, errorf("InvalidAMIID.NotFound", "The image id '[%s]' does not exist", id)
		}
	}
	type xmlImage struct {
		ImageID            string `xml:"imageId"`
		ImageLocation      string `xml:"imageLocation"`
		ImageState         string `xml:"imageState"`
		ImageOwnerID       string `xml:"imageOwnerId"`
		CreationDate       string `xml:"creationDate"`
		IsPublic           bool   `xml:"isPublic"`
		Architecture       string `xml:"architecture"`
		ImageType          string `xml:"imageType"`
		ImageOwnerAlias    string `xml:"imageOwnerAlias,omitempty"`
		Name               string `xml:"name"`
		Description        string `xml:"description"`
		RootDeviceType     string `xml:"rootDeviceType"`
		RootDeviceName     string `xml:"rootDeviceName"`
		VirtualizationType string `xml:"virtualizationType"`
		Hypervisor         string `xml:"hypervisor"`
		EnaSupport         bool   `xml:"enaSupport"`
		PlatformDetails    string `xml:"platformDetails"`
		UsageOperation     string `xml:"usageOperation"`
	}
	var match []xmlImage
	for _, im := range images {
		id := im.imageID(r.region)
		if len(ids) > 0 && !slices.Contains(ids, id) {
			continue
		}
		if len(owners) > 0 && !slices.ContainsFunc(owners, func(o string) bool {
			return o == im.ownerID || o != "" && o == im.ownerAlias
		}) {
			continue
		}
		ok := matchFilters(fs, func(f string) []string {
			if vals, ok := tagAttr(nil, f); ok {
				return vals
			}
			return map[string][]string{"name": {im.name}, "architecture": {im.arch}, "state": {"available"},
				"image-id": {id}, "owner-id": {im.ownerID}, "owner-alias": {im.ownerAlias}, "image-type": {"machine"},
				"is-public": {"true"}, "root-device-type": {"ebs"}, "virtualization-type": {"hvm"},
				"description": {im.description}}[f]
		})
		if !ok {
			continue
		}
		loc := im.ownerID + "/" + im.name
		if im.ownerAlias != "" {
			loc = im.ownerAlias + "/" + im.name
		}
		match = append(match, xmlImage{ImageID: id, ImageLocation: loc, ImageState: "available", ImageOwnerID: im.ownerID,
			CreationDate: im.created.Format(timeFormat), IsPublic: true, Architecture: im.arch, ImageType: "machine",
			ImageOwnerAlias: im.ownerAlias, Name: im.name, Description: im.description, RootDeviceType: "ebs",
			RootDeviceName: "/dev/sda1", VirtualizationType: "hvm", Hypervisor: "xen", EnaSupport: true,
			PlatformDetails: "Linux/UNIX", UsageOperation: "RunInstances"})
	}
	start, end, next, err := r.page(len(match), 5, 1000)
	if err != nil {
		return nil, err
	}
	return &struct {
		meta
		Images    []xmlImage `xml:"imagesSet>item"`
		NextToken string     `xml:"nextToken,omitempty"`
	}{Images: match[start:end], NextToken: next}, nil
}
