package aws

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go/middleware"

	"github.com/dstackai/dstack/backend"
)

// Launch starts the instances of req with one RunInstances call (MinCount
// 1, MaxCount n, ClientToken = req.IdempotencyKey) and returns those EC2
// granted: instance i is the spec of index AmiLaunchIndex, so when EC2
// grants k < n the specs k..n-1 have no instance and are the caller's to
// release. An instance whose launch index is out of the request, or repeats
// another's (an EC2-compatible endpoint may do either), is an extra: it is
// terminated at once, never tagged with a join token, and not returned.
// See Backend and the package doc.
//
// A repeated call with the same key returns the instances of the first
// (EC2's ClientToken) and tags them again. A call whose answer was lost
// (a timeout) returns the error; the instances, if any, carry the launch's
// tags for List.
func (b *Backend) Launch(ctx context.Context, req backend.LaunchRequest) ([]backend.Instance, error) {
	if err := validateLaunch(req); err != nil {
		return nil, err
	}
	if k := recordsFit(req.Instances); k < len(req.Instances) {
		// The launch-wide tag names every record; what does not fit is
		// left for the caller to release, as a partial grant is.
		req.Instances = req.Instances[:k]
	}
	region := req.Offer.Region
	c := b.client(region)
	t, err := b.typeInfo(ctx, region, req.Offer.InstanceType)
	if err != nil {
		return nil, err
	}
	if (req.Offer.Spot && !t.Spot) || (!req.Offer.Spot && !t.OnDemand) {
		return nil, backend.Errorf(backend.ErrUnsupported, "launch", "Unsupported", "%s is not sold as %s in %s", t.Name, purchase(req.Offer.Spot), region)
	}
	img, err := b.image(ctx, region, t)
	if err != nil {
		return nil, err
	}
	n := len(req.Instances)
	ud := userData{ServerURL: req.ServerURL, Spot: req.Offer.Spot}
	if n == 1 {
		ud.JoinToken = req.Instances[0].JoinToken
	}
	script, err := ud.render()
	if err != nil {
		return nil, fmt.Errorf("launch: user data: %w", err)
	}
	b.markUsed(region) // from here on, instances may exist there
	var out *ec2.RunInstancesOutput
	for attempt := 1; ; attempt++ {
		sg, err := b.securityGroup(ctx, region, req.ServerID)
		if err != nil {
			return nil, err
		}
		out, err = c.RunInstances(ctx, runInput(req, t, img, sg, script), b.paced)
		if err == nil {
			break
		}
		code := errCode(err)
		switch {
		case code == "InvalidGroup.NotFound" && attempt == 1:
			b.forgetGroup(region, req.ServerID) // deleted by hand: create it again
			continue
		case code == "InvalidParameterValue" && attempt < invalidAttempts:
			// Often a resource just created (an IAM change, a group) that
			// EC2 does not see yet.
			b.log.Info("launch refused as invalid; trying again", "offer", req.Offer.Key().String(), "attempt", attempt, "err", classify("launch", err))
			if err := b.sleep(ctx, b.invalidRetry); err != nil {
				return nil, err
			}
			continue
		}
		var pe pacingError
		if errors.As(err, &pe) {
			return nil, &backend.Error{Kind: backend.ErrThrottled, Op: "launch", Code: "LaunchRate", Reason: "the launch waited too long for its turn under the RunInstances rate", Err: err}
		}
		return nil, classify("launch", err)
	}

	var insts []backend.Instance
	specOf := map[string]backend.InstanceSpec{}
	index := map[string]int{}
	byIndex := map[int]string{}
	var extra []string
	for _, in := range out.Instances {
		i := int(awssdk.ToInt32(in.AmiLaunchIndex))
		id := awssdk.ToString(in.InstanceId)
		switch {
		case id == "":
			b.log.Warn("EC2 returned an instance with no ID; ignoring it", "launch_index", i, "count", n)
			continue
		case i < 0 || i >= n:
			b.log.Warn("EC2 returned an instance with a launch index out of the request; terminating it",
				"instance", id, "launch_index", i, "count", n, "launch_key", req.IdempotencyKey)
			extra = append(extra, id)
			continue
		case byIndex[i] != "":
			// Two instances cannot be the same spec: the first keeps it,
			// the repeat is an extra no record counts, never given a
			// join token.
			b.log.Warn("EC2 returned two instances with the same launch index; terminating the second",
				"instance", id, "kept", byIndex[i], "launch_index", i, "count", n, "launch_key", req.IdempotencyKey)
			extra = append(extra, id)
			continue
		}
		byIndex[i] = id
		inst := instanceOf(region, in)
		inst.Offer = req.Offer.Key()
		inst.Tags = backend.Tags{ServerID: req.ServerID, LimitID: req.LimitID, RecordID: req.Instances[i].RecordID, LaunchKey: req.IdempotencyKey}
		insts = append(insts, inst)
		specOf[id] = req.Instances[i]
		index[id] = i
		b.remember(region, id)
	}
	sort.Slice(insts, func(i, j int) bool { return index[insts[i].CloudID] < index[insts[j].CloudID] })
	if len(extra) > 0 {
		b.remember(region, extra...)
		if err := b.Terminate(context.WithoutCancel(ctx), extra); err != nil {
			// The reconciler terminates them: their tags name no record
			// that names them.
			b.log.Warn("terminate extra instances of a launch", "instances", extra, "err", err)
		}
	}
	if len(insts) == 0 {
		return nil, backend.Errorf(backend.ErrNoCapacity, "launch", "NoInstances", "RunInstances launched no instance of %s", req.Offer.Key())
	}
	if n > 1 {
		insts, err = b.tagInstances(ctx, c, insts, specOf)
		if err != nil {
			return nil, err
		}
	}
	b.log.Info("launched", "offer", req.Offer.Key().String(), "granted", len(insts), "wanted", n, "launch_key", req.IdempotencyKey)
	return insts, nil
}

// maxLaunchCount is the most instances one launch asks for.
const maxLaunchCount = 1000

// TagRecordIDs is the launch-wide tag of a launch of several instances: the
// record IDs of its specs, space-separated, in launch-index order.
const TagRecordIDs = "dstack:record-ids"

// maxTagValue is the longest value EC2 takes for a tag.
const maxTagValue = 256

// recordsFit is how many of specs a launch can name in its TagRecordIDs.
func recordsFit(specs []backend.InstanceSpec) int {
	if len(specs) == 1 {
		return 1
	}
	size := -1
	for i, s := range specs {
		size += len(s.RecordID) + 1
		if size > maxTagValue {
			return max(i, 1)
		}
	}
	return len(specs)
}

// invalidAttempts is how often a launch refused as InvalidParameterValue
// is tried, Backend.invalidRetry apart.
const invalidAttempts = 3

func purchase(spot bool) string {
	if spot {
		return "spot"
	}
	return "on-demand"
}

// runInput is the RunInstances call of a launch.
func runInput(req backend.LaunchRequest, t typeInfo, img cachedImage, sg, script string) *ec2.RunInstancesInput {
	n := len(req.Instances)
	tags := []types.Tag{
		tag(backend.TagServerID, req.ServerID),
		tag(backend.TagLimitID, req.LimitID),
		tag(backend.TagLaunchKey, req.IdempotencyKey),
	}
	if n == 1 {
		tags = append(tags, tag(backend.TagRecordID, req.Instances[0].RecordID), tag("Name", "dstack-"+req.Instances[0].RecordID))
	} else {
		ids := make([]string, n)
		for i, spec := range req.Instances {
			ids[i] = spec.RecordID
		}
		// Each instance also gets its own TagRecordID right after the
		// call; this tag, set with the launch itself, tells List which
		// record an instance is (by its launch index) when that never
		// happened (the answer was lost, the server stopped).
		tags = append(tags, tag(TagRecordIDs, strings.Join(ids, " ")), tag("Name", "dstack-"+req.IdempotencyKey))
	}
	specs := []types.TagSpecification{
		{ResourceType: types.ResourceTypeInstance, Tags: tags},
		{ResourceType: types.ResourceTypeVolume, Tags: tags},
	}
	in := &ec2.RunInstancesInput{
		ImageId:                           awssdk.String(img.id),
		InstanceType:                      types.InstanceType(t.Name),
		MinCount:                          awssdk.Int32(1),
		MaxCount:                          awssdk.Int32(int32(n)), //nolint:gosec // n ≤ maxLaunchCount (validateLaunch)
		ClientToken:                       awssdk.String(req.IdempotencyKey),
		SecurityGroupIds:                  []string{sg},
		UserData:                          awssdk.String(script),
		InstanceInitiatedShutdownBehavior: types.ShutdownBehaviorTerminate,
		MetadataOptions: &types.InstanceMetadataOptionsRequest{
			HttpTokens:              types.HttpTokensStateRequired,
			HttpEndpoint:            types.InstanceMetadataEndpointStateEnabled,
			HttpPutResponseHopLimit: awssdk.Int32(2), // containers on the instance are one hop further
			InstanceMetadataTags:    types.InstanceMetadataTagsStateEnabled,
		},
	}
	if req.Offer.Spot {
		in.InstanceMarketOptions = &types.InstanceMarketOptionsRequest{
			MarketType: types.MarketTypeSpot,
			SpotOptions: &types.SpotMarketOptions{
				SpotInstanceType:             types.SpotInstanceTypeOneTime,
				InstanceInterruptionBehavior: types.InstanceInterruptionBehaviorTerminate,
			},
		}
		specs = append(specs, types.TagSpecification{ResourceType: types.ResourceTypeSpotInstancesRequest, Tags: tags})
	}
	in.TagSpecifications = specs
	if img.rootDevice != "" {
		size := max(img.rootGiB, rootVolumeGiB(t))
		in.BlockDeviceMappings = []types.BlockDeviceMapping{{
			DeviceName: awssdk.String(img.rootDevice),
			Ebs: &types.EbsBlockDevice{
				VolumeSize:          awssdk.Int32(size),
				VolumeType:          types.VolumeTypeGp3,
				DeleteOnTermination: awssdk.Bool(true),
			},
		}}
	}
	return in
}

// rootVolumeGiB is the root volume a type gets: room for the jobs' Docker
// images and data, more for GPU types whose images are large.
func rootVolumeGiB(t typeInfo) int32 {
	if len(t.GPUs) > 0 {
		return 100
	}
	return 30
}

func tag(k, v string) types.Tag { return types.Tag{Key: awssdk.String(k), Value: awssdk.String(v)} }

// tagInstances tags each instance of a launch of more than one with its
// record ID, name and join token. EC2 may not know an instance for a few
// seconds after RunInstances (InvalidInstanceID.NotFound), so each is tried
// a few times. An instance that could not be tagged could never join: it
// is terminated and left out. Tagging goes on when ctx ends, which would
// otherwise leave launched instances without their tokens.
func (b *Backend) tagInstances(ctx context.Context, c ec2API, insts []backend.Instance, specOf map[string]backend.InstanceSpec) ([]backend.Instance, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	var (
		wg   sync.WaitGroup
		sem  = make(chan struct{}, 8)
		errs = make([]error, len(insts))
	)
	for i, in := range insts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			spec := specOf[in.CloudID]
			errs[i] = redact(b.createTags(ctx, c, in.CloudID,
				tag(backend.TagRecordID, spec.RecordID), tag("Name", "dstack-"+spec.RecordID), tag(TagJoinToken, spec.JoinToken)), spec.JoinToken)
		}()
	}
	wg.Wait()
	var failed []string
	var out []backend.Instance
	for i, in := range insts {
		if errs[i] == nil {
			out = append(out, in)
		} else {
			failed = append(failed, in.CloudID)
		}
	}
	if len(failed) == 0 {
		return out, nil
	}
	err := errors.Join(errs...)
	b.log.Warn("cannot tag launched instances with their join tokens; terminating them", "instances", failed, "err", err)
	if terr := b.Terminate(ctx, failed); terr != nil {
		b.log.Warn("terminate untagged instances", "instances", failed, "err", terr)
	}
	if len(out) == 0 {
		return nil, classify("launch", err)
	}
	return out, nil
}

// createTags tags one resource, trying again while EC2 does not know it yet.
func (b *Backend) createTags(ctx context.Context, c ec2API, id string, tags ...types.Tag) error {
	const attempts = 8
	for attempt := 1; ; attempt++ {
		_, err := c.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{id}, Tags: tags})
		if err == nil || attempt == attempts || errCode(err) != "InvalidInstanceID.NotFound" {
			return err
		}
		if err := b.sleep(ctx, b.tagRetry); err != nil {
			return err
		}
	}
}

// redact returns err without secret in its text: an AWS error that echoes
// a parameter (a tag value) becomes a *backend.Error of the same code with
// the secret masked and no cause.
func redact(err error, secret string) error {
	if err == nil || secret == "" || !strings.Contains(err.Error(), secret) {
		return err
	}
	code, msg, _ := awsError(err)
	return &backend.Error{Kind: kindOf(code), Op: "launch", Code: code, Reason: strings.ReplaceAll(msg, secret, "****")}
}

// pacingError is the launch pacer's refusal (the wait would outlast the
// call's deadline).
type pacingError struct{ err error }

func (e pacingError) Error() string { return "launch pacing: " + e.err.Error() }
func (e pacingError) Unwrap() error { return e.err }

// paced makes every attempt of a RunInstances call, the SDK's retries
// included, wait for the shared launch limiter.
func (b *Backend) paced(o *ec2.Options) {
	o.APIOptions = append(o.APIOptions, func(st *middleware.Stack) error {
		return st.Finalize.Insert(middleware.FinalizeMiddlewareFunc("dstackLaunchPacing",
			func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
				if err := b.limiter.Wait(ctx); err != nil {
					if ctx.Err() != nil {
						return middleware.FinalizeOutput{}, middleware.Metadata{}, ctx.Err()
					}
					return middleware.FinalizeOutput{}, middleware.Metadata{}, pacingError{err}
				}
				return next.HandleFinalize(ctx, in)
			}), "Retry", middleware.After)
	})
}

// validateLaunch checks what the backend needs of a request.
func validateLaunch(req backend.LaunchRequest) error {
	bad := func(format string, args ...any) error {
		return backend.Errorf(backend.ErrInvalid, "launch", "InvalidRequest", format, args...)
	}
	switch {
	case req.Offer.Backend != Name:
		return bad("offer %s is not the aws backend's", req.Offer.Key())
	case !validRegion(req.Offer.Region):
		return bad("%q is not an AWS region name", req.Offer.Region)
	case req.Offer.InstanceType == "":
		return bad("no instance type")
	case len(req.Instances) > maxLaunchCount:
		return bad("%d instances in one launch; at most %d", len(req.Instances), maxLaunchCount)
	}
	return req.Validate()
}
