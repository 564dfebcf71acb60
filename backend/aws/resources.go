package aws

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/dstackai/dstack/backend"
)

// Where the default images come from.
const (
	canonicalOwner = "099720109477"
	ubuntuImage    = "ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-%s-server-*" // %s: amd64 or arm64
	gpuImageOwner  = "amazon"
	gpuImage       = "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) *"
	gpuImageArm64  = "Deep Learning ARM64 Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) *"
)

// imageTTL is how long a region's chosen image is kept: new images come out
// every few weeks.
const imageTTL = 6 * time.Hour

// cachedImage is an image chosen for a region, architecture and GPU-ness.
type cachedImage struct {
	id         string
	arch       string // "amd64" or "arm64"
	rootDevice string // e.g. "/dev/sda1"; "" when EC2 did not say
	rootGiB    int32  // the root snapshot's size
	at         time.Time
}

// ec2Arch is EC2's name of an architecture.
func ec2Arch(arch string) string {
	if arch == "arm64" {
		return "arm64"
	}
	return "x86_64"
}

// image chooses the image of a type in region: Config.AMI or GPUAMI when
// set, else the newest default one (see the package doc). A region
// without one, or an override of another architecture, is ErrUnsupported
// (the offer cannot be launched there); an override EC2 does not know is
// ErrInvalid.
func (b *Backend) image(ctx context.Context, region string, t typeInfo) (cachedImage, error) {
	gpu := len(t.GPUs) > 0
	override := b.cfg.AMI
	if gpu {
		override = b.cfg.GPUAMI
	}
	key := region + "/" + t.Arch + "/" + map[bool]string{true: "gpu", false: "cpu"}[gpu]
	now := b.now()
	b.mu.Lock()
	img, ok := b.images[key]
	b.mu.Unlock()
	if ok && now.Sub(img.at) < imageTTL {
		return img, nil
	}
	in := &ec2.DescribeImagesInput{}
	if override != "" {
		in.ImageIds = []string{override}
	} else {
		name, owner := ubuntuImage, canonicalOwner
		if gpu {
			name, owner = gpuImage, gpuImageOwner
			if t.Arch == "arm64" {
				name = gpuImageArm64
			}
		} else {
			name = fmt.Sprintf(name, t.Arch)
		}
		in.Owners = []string{owner}
		in.Filters = []types.Filter{
			{Name: awssdk.String("name"), Values: []string{name}},
			{Name: awssdk.String("architecture"), Values: []string{ec2Arch(t.Arch)}},
			{Name: awssdk.String("state"), Values: []string{"available"}},
		}
	}
	var all []types.Image
	c := b.client(region)
	for pages := ec2.NewDescribeImagesPaginator(c, in); pages.HasMorePages(); {
		out, err := pages.NextPage(ctx)
		if actionUnsupported(err) {
			if override != "" {
				// Launched as given: EC2 checks it, and the root
				// volume keeps the image's own size.
				b.noteUnsupported("DescribeImages", "using the configured image "+override+" as given")
				img = cachedImage{id: override, arch: t.Arch, at: now}
				b.mu.Lock()
				b.images[key] = img
				b.mu.Unlock()
				return img, nil
			}
			flag := "--ami"
			if gpu {
				flag = "--gpu-ami"
			}
			return cachedImage{}, &backend.Error{Kind: backend.ErrUnsupported, Op: "launch", Code: errCode(err),
				Reason: fmt.Sprintf("the endpoint does not support DescribeImages, so no image for %s can be found: give one with `dstack aws config %s AMI_ID`", t.Name, flag), Err: err}
		}
		if err != nil {
			return cachedImage{}, classify("launch", err)
		}
		all = append(all, out.Images...)
	}
	if len(all) == 0 {
		if override != "" {
			return cachedImage{}, backend.Errorf(backend.ErrInvalid, "launch", "InvalidAMIID.NotFound", "image %s is not in %s: fix the configured AMI", override, region)
		}
		return cachedImage{}, backend.Errorf(backend.ErrUnsupported, "launch", "NoImage", "no image %q in %s for %s", in.Filters[0].Values[0], region, t.Arch)
	}
	sort.SliceStable(all, func(i, j int) bool {
		return awssdk.ToString(all[i].CreationDate) > awssdk.ToString(all[j].CreationDate)
	})
	im := all[0]
	img = cachedImage{id: awssdk.ToString(im.ImageId), arch: t.Arch, rootDevice: awssdk.ToString(im.RootDeviceName), at: now}
	if override != "" && im.Architecture != "" && string(im.Architecture) != ec2Arch(t.Arch) {
		return cachedImage{}, backend.Errorf(backend.ErrUnsupported, "launch", "ImageArchitecture",
			"the configured image %s is %s; %s needs %s", override, im.Architecture, t.Name, ec2Arch(t.Arch))
	}
	for _, m := range im.BlockDeviceMappings {
		if awssdk.ToString(m.DeviceName) == img.rootDevice && m.Ebs != nil {
			img.rootGiB = awssdk.ToInt32(m.Ebs.VolumeSize)
		}
	}
	b.mu.Lock()
	b.images[key] = img
	b.mu.Unlock()
	return img, nil
}

// groupName is the name of the server's security group: dstack-<server
// ID>, where a server ID already starts with "dstack-" (as the server makes
// them) and is then the name itself.
func groupName(serverID string) string {
	if strings.HasPrefix(serverID, "dstack-") {
		return serverID
	}
	return "dstack-" + serverID
}

// legacyGroupName is the name earlier versions gave the group, the prefix
// doubled. A server that has one keeps using it: EC2 cannot rename a group,
// and its instances are in it.
func legacyGroupName(serverID string) string { return "dstack-" + serverID }

// securityGroup returns the server's security group in region (in the
// default VPC), finding it by name or creating it once: tagged with the
// server's ID, the default egress (all) and no ingress, since runners
// connect out to the server. Two servers creating it at once is handled
// (InvalidGroup.Duplicate: the other's is used).
func (b *Backend) securityGroup(ctx context.Context, region, serverID string) (string, error) {
	key := region + "/" + serverID
	b.mu.Lock()
	id := b.groups[key]
	b.mu.Unlock()
	if id != "" {
		return id, nil
	}
	b.sgMu.Lock()
	defer b.sgMu.Unlock()
	b.mu.Lock()
	id = b.groups[key]
	b.mu.Unlock()
	if id != "" {
		return id, nil
	}
	c := b.client(region)
	name := groupName(serverID)
	id, err := b.findGroup(ctx, c, name)
	if err != nil {
		return "", err
	}
	if legacy := legacyGroupName(serverID); id == "" && legacy != name {
		if id, err = b.findGroup(ctx, c, legacy); err != nil {
			return "", err
		}
	}
	if id == "" {
		out, err := c.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{
			GroupName:   awssdk.String(name),
			Description: awssdk.String("dstack on-demand runners of server " + serverID + " (no ingress: runners connect out to the server)"),
			TagSpecifications: []types.TagSpecification{{
				ResourceType: types.ResourceTypeSecurityGroup,
				Tags:         []types.Tag{tag(backend.TagServerID, serverID), tag("Name", name)},
			}},
		})
		switch {
		case err == nil:
			id = awssdk.ToString(out.GroupId)
			b.log.Info("created the server's security group", "region", region, "group", id, "name", name)
		case errCode(err) == "InvalidGroup.Duplicate":
			if id, err = b.findGroup(ctx, c, name); err != nil {
				return "", err
			}
		default:
			return "", classify("launch", err)
		}
		if id == "" {
			return "", backend.Errorf(nil, "launch", "NoSecurityGroup", "security group %s was neither found nor created in %s", name, region)
		}
	}
	b.mu.Lock()
	b.groups[key] = id
	b.mu.Unlock()
	return id, nil
}

// findGroup finds a security group by name, or returns "".
func (b *Backend) findGroup(ctx context.Context, c ec2API, name string) (string, error) {
	out, err := c.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{
		Filters: []types.Filter{{Name: awssdk.String("group-name"), Values: []string{name}}},
	})
	if err != nil {
		return "", classify("launch", err)
	}
	for _, g := range out.SecurityGroups {
		if awssdk.ToString(g.GroupName) == name {
			return awssdk.ToString(g.GroupId), nil
		}
	}
	return "", nil
}

// forgetGroup drops a cached security group that EC2 no longer has.
func (b *Backend) forgetGroup(region, serverID string) {
	b.mu.Lock()
	delete(b.groups, region+"/"+serverID)
	b.mu.Unlock()
}
