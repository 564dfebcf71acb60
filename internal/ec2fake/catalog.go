package ec2fake

import (
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"time"
)

// InstanceType is one instance type the fake sells.
type InstanceType struct {
	Name      string
	VCPUs     int
	MemoryMiB int64
	Arch      string // "x86_64" or "arm64"
	GPUs      []GPU
	Spot      bool     // can be bought as spot
	Regions   []string // where it is offered; nil: every region
	SpotPrice float64  // USD per hour, the same in every zone
}

// GPU is one kind of accelerator an instance type has, as EC2's GpuInfo
// describes it.
type GPU struct {
	Name         string // e.g. "T4", "A100"
	Manufacturer string // e.g. "NVIDIA"
	Count        int
	MemoryMiB    int64 // per GPU
}

// DefaultCatalog is a small catalogue with EC2's real vCPU, memory and GPU
// figures. p4d.24xlarge is offered only in us-east-1, and p3.2xlarge cannot
// be bought as spot.
func DefaultCatalog() []InstanceType {
	nvidia := func(name string, count int, mib int64) []GPU {
		return []GPU{{Name: name, Manufacturer: "NVIDIA", Count: count, MemoryMiB: mib}}
	}
	return []InstanceType{
		{Name: "t3.micro", VCPUs: 2, MemoryMiB: 1024, Arch: "x86_64", Spot: true, SpotPrice: 0.0032},
		{Name: "m5.large", VCPUs: 2, MemoryMiB: 8192, Arch: "x86_64", Spot: true, SpotPrice: 0.0385},
		{Name: "m5.xlarge", VCPUs: 4, MemoryMiB: 16384, Arch: "x86_64", Spot: true, SpotPrice: 0.0771},
		{Name: "m5.2xlarge", VCPUs: 8, MemoryMiB: 32768, Arch: "x86_64", Spot: true, SpotPrice: 0.1543},
		{Name: "c5.large", VCPUs: 2, MemoryMiB: 4096, Arch: "x86_64", Spot: true, SpotPrice: 0.0329},
		{Name: "c5.xlarge", VCPUs: 4, MemoryMiB: 8192, Arch: "x86_64", Spot: true, SpotPrice: 0.0658},
		{Name: "m6g.large", VCPUs: 2, MemoryMiB: 8192, Arch: "arm64", Spot: true, SpotPrice: 0.0312},
		{Name: "g4dn.xlarge", VCPUs: 4, MemoryMiB: 16384, Arch: "x86_64", GPUs: nvidia("T4", 1, 16384), Spot: true, SpotPrice: 0.1963},
		{Name: "g5.xlarge", VCPUs: 4, MemoryMiB: 16384, Arch: "x86_64", GPUs: nvidia("A10G", 1, 24576), Spot: true, SpotPrice: 0.3869},
		{Name: "p4d.24xlarge", VCPUs: 96, MemoryMiB: 1179648, Arch: "x86_64", GPUs: nvidia("A100", 8, 40960), Spot: true,
			Regions: []string{"us-east-1"}, SpotPrice: 11.7858},
		{Name: "p3.2xlarge", VCPUs: 8, MemoryMiB: 62464, Arch: "x86_64", GPUs: nvidia("V100", 1, 16384), SpotPrice: 0.918},
	}
}

// offeredIn reports whether the type is sold in region.
func (t *InstanceType) offeredIn(region string) bool {
	return t.Regions == nil || slices.Contains(t.Regions, region)
}

func (s *Server) instanceType(name string) (*InstanceType, bool) {
	for i := range s.opts.Catalog {
		if s.opts.Catalog[i].Name == name {
			return &s.opts.Catalog[i], true
		}
	}
	return nil, false
}

// knownRegions are AWS regions that DescribeRegions with AllRegions lists as
// not enabled when Options.Regions does not hold them.
var knownRegions = []string{
	"us-east-1", "us-east-2", "us-west-1", "us-west-2", "ca-central-1", "sa-east-1",
	"eu-west-1", "eu-west-2", "eu-west-3", "eu-central-1", "eu-north-1",
	"ap-south-1", "ap-northeast-1", "ap-northeast-2", "ap-southeast-1", "ap-southeast-2", "ap-east-1",
}

// zone is an availability zone.
type zone struct {
	name, id, region string
}

// zonesOf are the region's three zones: eu-west-1a (euw1-az1), b, c.
func zonesOf(region string) []zone {
	short := regionShortName(region)
	var out []zone
	for i, letter := range []string{"a", "b", "c"} {
		out = append(out, zone{name: region + letter, id: fmt.Sprintf("%s-az%d", short, i+1), region: region})
	}
	return out
}

// regionShortName abbreviates a region as zone IDs do: eu-west-1 → euw1,
// ap-southeast-2 → apse2.
func regionShortName(region string) string {
	parts := strings.Split(region, "-")
	if len(parts) != 3 {
		return strings.ReplaceAll(region, "-", "")
	}
	dir := map[string]string{"east": "e", "west": "w", "north": "n", "south": "s", "central": "c",
		"northeast": "ne", "northwest": "nw", "southeast": "se", "southwest": "sw"}[parts[1]]
	if dir == "" {
		dir = parts[1][:1]
	}
	return parts[0] + dir + parts[2]
}

// image is a public AMI; its ID differs per region, as real AMIs' do.
type image struct {
	name        string
	ownerID     string
	ownerAlias  string // "amazon" for Amazon's images, "" otherwise
	arch        string
	created     time.Time
	description string
}

const (
	canonicalOwner = "099720109477"
	amazonOwner    = "898082745236"
)

// images is the public catalogue: Canonical's Ubuntu 22.04 and Amazon's
// Deep Learning Base AMIs, each in several builds so that picking the newest
// by CreationDate matters.
var images = func() []image {
	var out []image
	day := func(s string) time.Time {
		t, _ := time.Parse("20060102", s)
		return t.Add(9*time.Hour + 17*time.Minute)
	}
	for _, build := range []string{"20240801", "20241002", "20240911"} {
		for _, arch := range []string{"amd64", "arm64"} {
			a := map[string]string{"amd64": "x86_64", "arm64": "arm64"}[arch]
			out = append(out, image{
				name:        fmt.Sprintf("ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-%s-server-%s", arch, build),
				ownerID:     canonicalOwner,
				arch:        a,
				created:     day(build),
				description: fmt.Sprintf("Canonical, Ubuntu, 22.04 LTS, %s jammy image build on %s", arch, day(build).Format("2006-01-02")),
			})
		}
	}
	for _, build := range []string{"20240815", "20241001", "20240916"} {
		out = append(out,
			image{
				name:        "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) " + build,
				ownerID:     amazonOwner,
				ownerAlias:  "amazon",
				arch:        "x86_64",
				created:     day(build),
				description: "Supported EC2 instances: G4dn, G5, G6, Gr6, G6e, P4, P4de, P5, P5e. Release notes: https://docs.aws.amazon.com/dlami/latest/devguide/appendix-ami-release-notes.html",
			},
			image{
				name:        "Deep Learning ARM64 Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) " + build,
				ownerID:     amazonOwner,
				ownerAlias:  "amazon",
				arch:        "arm64",
				created:     day(build),
				description: "Supported EC2 instances: G5g. Release notes: https://docs.aws.amazon.com/dlami/latest/devguide/appendix-ami-release-notes.html",
			})
	}
	return out
}()

// imageID is the image's AMI ID in region.
func (im image) imageID(region string) string {
	return "ami-" + hashHex(region+"/"+im.name, 17)
}

// imageByID finds an image of region by its ID.
func imageByID(region, id string) (image, bool) {
	for _, im := range images {
		if im.imageID(region) == id {
			return im, true
		}
	}
	return image{}, false
}

// hashHex is n hexadecimal digits derived from s, for stable resource IDs.
func hashHex(s string, n int) string {
	var out string
	for i := 0; len(out) < n; i++ {
		h := fnv.New64a()
		fmt.Fprintf(h, "%d/%s", i, s)
		out += fmt.Sprintf("%016x", h.Sum64())
	}
	return out[:n]
}
