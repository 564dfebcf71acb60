package aws

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/backend"
)

// offerTTL is how long a region's offers are cached.
const offerTTL = 5 * time.Minute

// regionsTTL is how long the account's list of regions is cached.
const regionsTTL = time.Hour

type cachedOffers struct {
	offers []backend.Offer
	at     time.Time
}

type cachedRegions struct {
	enabled map[string]bool // region → opted in (or not needing it)
	at      time.Time
}

// typeInfo is what the backend keeps of an instance type.
type typeInfo struct {
	Name      string
	Arch      string // "amd64" or "arm64"
	CPUs      int
	MemoryMiB int64 // nominal
	GPUs      []api.GPU
	Spot      bool // sold as spot
	OnDemand  bool // sold on demand
}

// Offers lists the instance types region sells, at both purchase types
// where the type is sold both ways, with what a runner on each will report
// and what it costs (see prices.go). Types the runner cannot use (Mac,
// 32-bit, fractional GPUs) are left out. An unknown region, or one not
// enabled for the account, is backend.ErrInvalid. The result is cached for
// offerTTL.
func (b *Backend) Offers(ctx context.Context, region string) ([]backend.Offer, error) {
	if err := b.checkRegion(ctx, "offers", region); err != nil {
		return nil, err
	}
	now := b.now()
	b.mu.Lock()
	c, ok := b.offers[region]
	b.mu.Unlock()
	if ok && now.Sub(c.at) < offerTTL {
		return slices.Clone(c.offers), nil
	}
	infos, err := b.loadTypes(ctx, region)
	if err != nil {
		return nil, err
	}
	spot, spotErr := b.spotPrices(ctx, region, infos)
	var out []backend.Offer
	var noListPrice, noSpotPrice []string
	for _, t := range infos {
		od, known := onDemandPrice(region, t)
		if !known {
			noListPrice = append(noListPrice, t.Name)
		}
		base := backend.Offer{Backend: Name, Region: region, InstanceType: t.Name,
			CPUs: t.CPUs, MemoryMiB: usableMemoryMiB(t.MemoryMiB), GPUs: t.GPUs}
		if t.OnDemand {
			o := base
			o.PricePerHour = od
			out = append(out, o)
		}
		if t.Spot {
			o := base
			o.Spot = true
			o.PricePerHour, known = spotPrice(spot, t.Name, od)
			if !known && spotErr == nil {
				noSpotPrice = append(noSpotPrice, t.Name)
			}
			out = append(out, o)
		}
	}
	if len(noListPrice) > 0 {
		b.logOnce("od:"+region+":"+strings.Join(noListPrice, ","), "no on-demand list price shipped for some instance types; their prices are estimated from their size (refresh the table with dstack-aws-prices)",
			"region", region, "instance_types", noListPrice)
	}
	if len(noSpotPrice) > 0 {
		b.logOnce("spot:"+region+":"+strings.Join(noSpotPrice, ","), "EC2 gave no spot price for some instance types; their spot offers are priced at a fraction of on-demand",
			"region", region, "instance_types", noSpotPrice, "fraction", spotFraction)
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].InstanceType != out[j].InstanceType {
			return out[i].InstanceType < out[j].InstanceType
		}
		return !out[i].Spot && out[j].Spot
	})
	b.mu.Lock()
	b.offers[region] = cachedOffers{offers: out, at: now}
	b.used[region] = true
	b.mu.Unlock()
	return slices.Clone(out), nil
}

// checkRegion refuses a region that is misspelt, that EC2 does not list,
// or that the account has not enabled, with backend.ErrInvalid. When the
// list of regions cannot be had (no ec2:DescribeRegions), only the spelling
// is checked.
func (b *Backend) checkRegion(ctx context.Context, op, region string) error {
	if !validRegion(region) {
		return backend.Errorf(backend.ErrInvalid, op, "InvalidRegion", "%q is not an AWS region name (e.g. us-east-1)", region)
	}
	regions, err := b.knownRegions(ctx)
	if actionUnsupported(err) {
		b.noteUnsupported("DescribeRegions", "using the configured region and the regions of limits as given")
		return nil
	}
	if err != nil {
		b.logOnce("regions:"+errCode(err), "cannot list the account's regions; trusting the region names given", "err", err)
		return nil
	}
	enabled, known := regions[region]
	switch {
	case !known:
		return backend.Errorf(backend.ErrInvalid, op, "InvalidRegion", "EC2 has no region %q", region)
	case !enabled:
		return backend.Errorf(backend.ErrInvalid, op, "OptInRequired",
			"region %s is not enabled for this AWS account: enable it in the AWS console (Account → AWS Regions) or use another", region)
	}
	return nil
}

// knownRegions lists every region EC2 has and whether the account may use
// it, asked in the default region and cached for regionsTTL.
func (b *Backend) knownRegions(ctx context.Context) (map[string]bool, error) {
	now := b.now()
	b.mu.Lock()
	c := b.regions
	b.mu.Unlock()
	if c != nil && now.Sub(c.at) < regionsTTL {
		return c.enabled, nil
	}
	out, err := b.client(b.cfg.Region).DescribeRegions(ctx, &ec2.DescribeRegionsInput{AllRegions: awssdk.Bool(true)})
	if err != nil {
		return nil, classify("offers", err)
	}
	m := map[string]bool{}
	for _, r := range out.Regions {
		st := awssdk.ToString(r.OptInStatus)
		m[awssdk.ToString(r.RegionName)] = st == "" || st == "opt-in-not-required" || st == "opted-in"
	}
	b.mu.Lock()
	b.regions = &cachedRegions{enabled: m, at: now}
	b.mu.Unlock()
	return m, nil
}

// loadTypes lists the types region offers (DescribeInstanceTypeOfferings)
// and describes them (DescribeInstanceTypes, 100 a call), keeping those a
// runner can use, and caches them for Launch.
func (b *Backend) loadTypes(ctx context.Context, region string) ([]typeInfo, error) {
	c := b.client(region)
	var names []types.InstanceType
	in := &ec2.DescribeInstanceTypeOfferingsInput{LocationType: types.LocationTypeRegion}
	for pages := ec2.NewDescribeInstanceTypeOfferingsPaginator(c, in); pages.HasMorePages(); {
		out, err := pages.NextPage(ctx)
		if err != nil {
			return nil, classify("offers", err)
		}
		for _, o := range out.InstanceTypeOfferings {
			names = append(names, o.InstanceType)
		}
	}
	infos, err := b.describeTypes(ctx, c, names)
	if err != nil {
		return nil, classify("offers", err)
	}
	b.mu.Lock()
	m := make(map[string]typeInfo, len(infos))
	for _, t := range infos {
		m[t.Name] = t
	}
	b.types[region] = m
	b.mu.Unlock()
	return infos, nil
}

// describeTypes describes the named types, 100 a call, keeping those a
// runner can use, sorted by name.
func (b *Backend) describeTypes(ctx context.Context, c ec2API, names []types.InstanceType) ([]typeInfo, error) {
	var out []typeInfo
	for start := 0; start < len(names); start += 100 {
		in := &ec2.DescribeInstanceTypesInput{InstanceTypes: names[start:min(start+100, len(names))]}
		for pages := ec2.NewDescribeInstanceTypesPaginator(c, in); pages.HasMorePages(); {
			res, err := pages.NextPage(ctx)
			if err != nil {
				return nil, err
			}
			for _, it := range res.InstanceTypes {
				if t, ok := typeInfoOf(it); ok {
					out = append(out, t)
				}
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// typeInfo describes one instance type of the region for Launch, from the
// cache Offers fills or with a DescribeInstanceTypes call.
func (b *Backend) typeInfo(ctx context.Context, region, name string) (typeInfo, error) {
	b.mu.Lock()
	t, ok := b.types[region][name]
	b.mu.Unlock()
	if ok {
		return t, nil
	}
	infos, err := b.describeTypes(ctx, b.client(region), []types.InstanceType{types.InstanceType(name)})
	if err != nil {
		return typeInfo{}, classify("launch", err)
	}
	if len(infos) == 0 {
		return typeInfo{}, backend.Errorf(backend.ErrUnsupported, "launch", "InvalidInstanceType", "region %s does not sell %s, or dstack-runner cannot run on it", region, name)
	}
	b.mu.Lock()
	if b.types[region] == nil {
		b.types[region] = map[string]typeInfo{}
	}
	b.types[region][name] = infos[0]
	b.mu.Unlock()
	return infos[0], nil
}

// typeInfoOf keeps what the backend needs of a type, or reports false for
// a type dstack-runner cannot use: no 64-bit Linux architecture (Mac
// types are x86_64_mac / arm64_mac), or fractional GPUs.
func typeInfoOf(it types.InstanceTypeInfo) (typeInfo, bool) {
	t := typeInfo{Name: string(it.InstanceType)}
	if strings.HasPrefix(t.Name, "mac") {
		return t, false
	}
	if it.ProcessorInfo != nil {
		for _, a := range it.ProcessorInfo.SupportedArchitectures {
			switch a {
			case types.ArchitectureTypeX8664:
				t.Arch = "amd64"
			case types.ArchitectureTypeArm64:
				t.Arch = "arm64"
			}
		}
	}
	if t.Arch == "" {
		return t, false
	}
	if it.VCpuInfo != nil {
		t.CPUs = int(awssdk.ToInt32(it.VCpuInfo.DefaultVCpus))
	}
	if it.MemoryInfo != nil {
		t.MemoryMiB = awssdk.ToInt64(it.MemoryInfo.SizeInMiB)
	}
	for _, u := range it.SupportedUsageClasses {
		switch u {
		case types.UsageClassTypeSpot:
			t.Spot = true
		case types.UsageClassTypeOnDemand:
			t.OnDemand = true
		}
	}
	if it.GpuInfo != nil {
		for _, g := range it.GpuInfo.Gpus {
			if p := g.GpuPartitionSize; p != nil && *p < 1 {
				return t, false
			}
			if !strings.EqualFold(awssdk.ToString(g.Manufacturer), "NVIDIA") {
				continue // nvidia-smi does not see it, so neither does the runner
			}
			var mem int64
			if g.MemoryInfo != nil {
				mem = int64(awssdk.ToInt32(g.MemoryInfo.SizeInMiB))
			}
			name, smiMem := nvidiaSMIName(awssdk.ToString(g.Name), mem)
			for range awssdk.ToInt32(g.Count) {
				t.GPUs = append(t.GPUs, api.GPU{Name: name, MemoryMiB: smiMem})
			}
		}
	}
	return t, t.CPUs > 0 && (t.Spot || t.OnDemand)
}

// usableMemoryMiB is the memory dstack-runner will report on a type of
// nominal MiB: MemTotal of /proc/meminfo, which leaves out what the kernel
// reserves at boot (the page structures of all memory, about 1.6%, the
// kernel image, firmware ranges) and what the hypervisor keeps. Measured
// MemTotal on current types is 94–97% of the nominal size, less in
// proportion on the smallest, so the offer promises 94% less 64 MiB, never
// more than the runner reports: an offer promising more would be launched
// for a job its runner then could not take.
func usableMemoryMiB(nominal int64) int64 {
	if nominal <= 0 {
		return 0
	}
	return max(int64(math.Floor(float64(nominal)*0.94))-64, nominal/2)
}

// smiGPU is a GPU as nvidia-smi names it, with its memory.total.
type smiGPU struct {
	name      string
	memoryMiB int64
}

// nvidiaSMI maps EC2's GPU name and memory (GpuDeviceInfo) to what
// nvidia-smi prints on the instance, for the GPUs of current types.
var nvidiaSMI = map[string]smiGPU{
	"T4/16384":    {"Tesla T4", 15360},              // g4dn
	"T4g/16384":   {"NVIDIA T4G", 15360},            // g5g
	"A10G/24576":  {"NVIDIA A10G", 23028},           // g5
	"L4/22888":    {"NVIDIA L4", 22888},             // g6
	"L40S/45776":  {"NVIDIA L40S", 45776},           // g6e
	"A100/40960":  {"NVIDIA A100-SXM4-40GB", 40960}, // p4d
	"A100/81920":  {"NVIDIA A100-SXM4-80GB", 81920}, // p4de
	"H100/81920":  {"NVIDIA H100 80GB HBM3", 81559}, // p5
	"H200/143360": {"NVIDIA H200", 143360},          // p5e, p5en
	"V100/16384":  {"Tesla V100-SXM2-16GB", 16160},  // p3
	"V100/32768":  {"Tesla V100-SXM2-32GB", 32510},  // p3dn
	"K80/12288":   {"Tesla K80", 11441},             // p2
	"M60/8192":    {"Tesla M60", 8129},              // g3
}

// nvidiaSMIName is the name and memory nvidia-smi shows for an EC2 GPU of
// the given name and MiB: the known figure where there is one, otherwise
// "NVIDIA <name>" with 93% of EC2's memory (nvidia-smi's memory.total is
// below the nominal size: 15360 MiB for a 16384 MiB T4). The planner
// matches a job's GPU name as a substring, case-insensitively, so a job
// asking for "A100" or "t4" matches either form.
func nvidiaSMIName(ec2Name string, mib int64) (string, int64) {
	if g, ok := nvidiaSMI[fmt.Sprintf("%s/%d", ec2Name, mib)]; ok {
		return g.name, min(g.memoryMiB, mib)
	}
	name := ec2Name
	if !strings.HasPrefix(strings.ToUpper(name), "NVIDIA") {
		name = "NVIDIA " + name
	}
	return name, int64(math.Floor(float64(mib) * 0.93))
}
