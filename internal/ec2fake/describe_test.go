package ec2fake

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

func TestRegionsAndZones(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	regions := must(f.ec2.DescribeRegions(ctx, &ec2.DescribeRegionsInput{}))(t)
	var names []string
	for _, r := range regions.Regions {
		names = append(names, aws.ToString(r.RegionName))
	}
	if !slices.Equal(names, []string{"us-east-1", "eu-west-1", "us-west-2"}) {
		t.Errorf("regions %v", names)
	}
	all := must(f.ec2.DescribeRegions(ctx, &ec2.DescribeRegionsInput{AllRegions: aws.Bool(true)}))(t)
	if len(all.Regions) <= 3 {
		t.Errorf("AllRegions: %d regions", len(all.Regions))
	}
	zones := must(f.ec2.DescribeAvailabilityZones(ctx, &ec2.DescribeAvailabilityZonesInput{}))(t)
	names = nil
	for _, z := range zones.AvailabilityZones {
		names = append(names, aws.ToString(z.ZoneName)+"="+aws.ToString(z.ZoneId))
	}
	if !slices.Equal(names, []string{"eu-west-1a=euw1-az1", "eu-west-1b=euw1-az2", "eu-west-1c=euw1-az3"}) {
		t.Errorf("zones %v", names)
	}
}

func TestInstanceTypes(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	out := must(f.ec2.DescribeInstanceTypes(ctx, &ec2.DescribeInstanceTypesInput{
		InstanceTypes: []types.InstanceType{"g5.xlarge", "m6g.large"},
	}))(t)
	if len(out.InstanceTypes) != 2 {
		t.Fatalf("%d types", len(out.InstanceTypes))
	}
	for _, it := range out.InstanceTypes {
		switch it.InstanceType {
		case "g5.xlarge":
			g := it.GpuInfo.Gpus[0]
			if aws.ToInt32(it.VCpuInfo.DefaultVCpus) != 4 || aws.ToInt64(it.MemoryInfo.SizeInMiB) != 16384 ||
				aws.ToString(g.Name) != "A10G" || aws.ToString(g.Manufacturer) != "NVIDIA" || aws.ToInt32(g.Count) != 1 ||
				aws.ToInt32(g.MemoryInfo.SizeInMiB) != 24576 || aws.ToInt32(it.GpuInfo.TotalGpuMemoryInMiB) != 24576 ||
				!slices.Contains(it.SupportedUsageClasses, types.UsageClassTypeSpot) {
				t.Errorf("g5.xlarge %+v", it)
			}
		case "m6g.large":
			if it.GpuInfo != nil || !slices.Equal(it.ProcessorInfo.SupportedArchitectures, []types.ArchitectureType{types.ArchitectureTypeArm64}) {
				t.Errorf("m6g.large %+v", it)
			}
		}
	}
	_, err := f.ec2.DescribeInstanceTypes(ctx, &ec2.DescribeInstanceTypesInput{InstanceTypes: []types.InstanceType{"m9.huge"}})
	wantCode(t, err, "InvalidInstanceType")

	// Paginated, the catalogue comes whole; p4d.24xlarge only in us-east-1.
	count := func(c *ec2.Client) (n int, p4d bool) {
		p := ec2.NewDescribeInstanceTypesPaginator(c, &ec2.DescribeInstanceTypesInput{MaxResults: aws.Int32(5)})
		for p.HasMorePages() {
			page := must(p.NextPage(ctx))(t)
			for _, it := range page.InstanceTypes {
				n++
				p4d = p4d || it.InstanceType == "p4d.24xlarge"
			}
		}
		return n, p4d
	}
	if n, p4d := count(f.ec2); n != len(DefaultCatalog())-1 || p4d {
		t.Errorf("eu-west-1: %d types, p4d %v", n, p4d)
	}
	if n, p4d := count(client(f.srv, "us-east-1", testKey, testSecret)); n != len(DefaultCatalog()) || !p4d {
		t.Errorf("us-east-1: %d types, p4d %v", n, p4d)
	}

	offers := must(f.ec2.DescribeInstanceTypeOfferings(ctx, &ec2.DescribeInstanceTypeOfferingsInput{
		LocationType: types.LocationTypeAvailabilityZone,
		Filters:      []types.Filter{{Name: aws.String("instance-type"), Values: []string{"g4dn.xlarge", "p4d.24xlarge"}}},
	}))(t)
	var locs []string
	for _, o := range offers.InstanceTypeOfferings {
		locs = append(locs, string(o.InstanceType)+"@"+aws.ToString(o.Location))
	}
	if !slices.Equal(locs, []string{"g4dn.xlarge@eu-west-1a", "g4dn.xlarge@eu-west-1b", "g4dn.xlarge@eu-west-1c"}) {
		t.Errorf("offerings %v", locs)
	}
}

func TestSpotPrices(t *testing.T) {
	t.Parallel()
	f := setup(t)
	out := must(f.ec2.DescribeSpotPriceHistory(context.Background(), &ec2.DescribeSpotPriceHistoryInput{
		InstanceTypes:       []types.InstanceType{"m5.large", "p3.2xlarge"},
		ProductDescriptions: []string{"Linux/UNIX"},
		StartTime:           aws.Time(f.clock.Now()),
	}))(t)
	if len(out.SpotPriceHistory) != 3 {
		t.Fatalf("%d prices, want one per zone of m5.large", len(out.SpotPriceHistory))
	}
	for _, p := range out.SpotPriceHistory {
		if p.InstanceType != "m5.large" || aws.ToString(p.SpotPrice) != "0.038500" || p.Timestamp == nil {
			t.Errorf("price %+v", p)
		}
	}
}

func TestImages(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	dl := must(f.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{
		Owners:  []string{"amazon"},
		Filters: []types.Filter{{Name: aws.String("name"), Values: []string{"Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) *"}}},
	}))(t)
	if len(dl.Images) != 3 {
		t.Fatalf("%d deep learning images, want 3 builds", len(dl.Images))
	}
	for _, im := range dl.Images {
		if aws.ToString(im.OwnerId) != "898082745236" || im.Architecture != types.ArchitectureValuesX8664 ||
			!strings.HasPrefix(aws.ToString(im.ImageId), "ami-") {
			t.Errorf("image %+v", im)
		}
	}
	// AMI IDs differ per region.
	us := client(f.srv, "us-east-1", testKey, testSecret)
	_, err := us.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{aws.ToString(dl.Images[0].ImageId)}})
	wantCode(t, err, "InvalidAMIID.NotFound")

	newest := must(f.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{ubuntuAMI(t, f)}}))(t)
	if name := aws.ToString(newest.Images[0].Name); name != "ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-amd64-server-20241002" {
		t.Errorf("newest Ubuntu image %s", name)
	}
}
