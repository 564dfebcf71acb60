package aws

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/dstackai/dstack/backend"
)

// listedStates are the EC2 states List asks for: all but terminated.
var listedStates = []string{"pending", "running", "shutting-down", "stopping", "stopped"}

// List returns the instances tagged with serverID in every region the
// backend has been used in (the default region and those of successful
// Offers, Launch and Terminate calls), oldest first. A region that cannot
// be listed fails the whole call, so that the caller never takes its
// instances for gone. On the way it cancels the server's spot requests
// left open with no instance.
func (b *Backend) List(ctx context.Context, serverID string) ([]backend.Instance, error) {
	if serverID == "" {
		return nil, backend.Errorf(backend.ErrInvalid, "list", "InvalidRequest", "no server ID")
	}
	regions := b.usedRegions()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		out  []backend.Instance
		errs []error
	)
	for _, region := range regions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			insts, err := b.listRegion(ctx, region, serverID)
			if err == nil && b.sweepDue(region) {
				b.cancelOrphanSpotRequests(ctx, region, serverID)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", region, err))
				return
			}
			out = append(out, insts...)
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	sort.SliceStable(out, func(i, j int) bool {
		if !out[i].LaunchedAt.Equal(out[j].LaunchedAt) {
			return out[i].LaunchedAt.Before(out[j].LaunchedAt)
		}
		return out[i].CloudID < out[j].CloudID
	})
	return out, nil
}

// listRegion lists the server's instances in one region.
func (b *Backend) listRegion(ctx context.Context, region, serverID string) ([]backend.Instance, error) {
	c := b.client(region)
	in := &ec2.DescribeInstancesInput{
		Filters: []types.Filter{
			{Name: awssdk.String("tag:" + backend.TagServerID), Values: []string{serverID}},
			{Name: awssdk.String("instance-state-name"), Values: listedStates},
		},
		MaxResults: awssdk.Int32(b.pageSize),
	}
	var out []backend.Instance
	var ids []string
	for pages := ec2.NewDescribeInstancesPaginator(c, in); pages.HasMorePages(); {
		res, err := pages.NextPage(ctx)
		if err != nil {
			return nil, classify("list", err)
		}
		for _, r := range res.Reservations {
			for _, i := range r.Instances {
				inst := instanceOf(region, i)
				if inst.Tags.ServerID != serverID {
					continue // an endpoint that ignores the filter
				}
				out = append(out, inst)
				ids = append(ids, inst.CloudID)
			}
		}
	}
	b.remember(region, ids...)
	return out, nil
}

// instanceOf is the backend's view of an EC2 instance.
func instanceOf(region string, i types.Instance) backend.Instance {
	tags := map[string]string{}
	for _, t := range i.Tags {
		tags[awssdk.ToString(t.Key)] = awssdk.ToString(t.Value)
	}
	var state types.InstanceStateName
	if i.State != nil {
		state = i.State.Name
	}
	record := tags[backend.TagRecordID]
	if all := strings.Fields(tags[TagRecordIDs]); record == "" && len(all) > 0 {
		// A launch of several whose per-instance tags never came: its
		// launch index names the record.
		if k := int(awssdk.ToInt32(i.AmiLaunchIndex)); k >= 0 && k < len(all) {
			record = all[k]
		}
	}
	return backend.Instance{
		CloudID: awssdk.ToString(i.InstanceId),
		Offer: backend.OfferKey{
			Backend:      Name,
			Region:       region,
			InstanceType: string(i.InstanceType),
			Spot:         i.InstanceLifecycle == types.InstanceLifecycleTypeSpot,
		},
		Tags: backend.Tags{
			ServerID:  tags[backend.TagServerID],
			LimitID:   tags[backend.TagLimitID],
			RecordID:  record,
			LaunchKey: tags[backend.TagLaunchKey],
		},
		State:      mapState(state),
		LaunchedAt: awssdk.ToTime(i.LaunchTime).UTC(),
	}
}

// mapState maps an EC2 state onto the backend's (see the package doc).
func mapState(s types.InstanceStateName) backend.InstanceState {
	switch s {
	case types.InstanceStateNamePending:
		return backend.StatePending
	case types.InstanceStateNameRunning:
		return backend.StateRunning
	case types.InstanceStateNameShuttingDown:
		return backend.StateTerminating
	}
	// terminated, stopping, stopped: no runner is, or will be, there.
	return backend.StateGone
}

// spotSweepEvery is how often List looks for open spot requests to cancel
// in a region.
const spotSweepEvery = 5 * time.Minute

// sweepDue reports whether the region's spot requests are due a sweep, and
// counts one as done.
func (b *Backend) sweepDue(region string) bool {
	now := b.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	if last, ok := b.swept[region]; ok && now.Sub(last) < spotSweepEvery {
		return false
	}
	b.swept[region] = now
	return true
}

// cancelOrphanSpotRequests cancels the server's spot requests left open
// with no instance for longer than spotOpenGrace (a launch's own request
// is open only while RunInstances runs). Failures are logged: they cost
// nothing while the request waits.
func (b *Backend) cancelOrphanSpotRequests(ctx context.Context, region, serverID string) {
	c := b.client(region)
	in := &ec2.DescribeSpotInstanceRequestsInput{Filters: []types.Filter{
		{Name: awssdk.String("tag:" + backend.TagServerID), Values: []string{serverID}},
		{Name: awssdk.String("state"), Values: []string{"open"}},
	}}
	var ids []string
	now := b.now()
	for pages := ec2.NewDescribeSpotInstanceRequestsPaginator(c, in); pages.HasMorePages(); {
		res, err := pages.NextPage(ctx)
		if err != nil {
			b.logOnce("spotlist:"+region+":"+errCode(err), "cannot list spot requests to cancel open ones", "region", region, "err", classify("list", err))
			return
		}
		for _, r := range res.SpotInstanceRequests {
			if awssdk.ToString(r.InstanceId) != "" || r.State != types.SpotInstanceStateOpen {
				continue
			}
			if t := awssdk.ToTime(r.CreateTime); !t.IsZero() && now.Sub(t) < b.spotOpenGrace {
				continue
			}
			ids = append(ids, awssdk.ToString(r.SpotInstanceRequestId))
		}
	}
	if len(ids) == 0 {
		return
	}
	if _, err := c.CancelSpotInstanceRequests(ctx, &ec2.CancelSpotInstanceRequestsInput{SpotInstanceRequestIds: ids}); err != nil {
		if actionUnsupported(err) {
			b.noteUnsupported("CancelSpotInstanceRequests", "open spot requests are left to the endpoint")
			return
		}
		b.log.Warn("cannot cancel open spot requests", "region", region, "requests", ids, "err", classify("list", err))
		return
	}
	b.log.Info("cancelled open spot requests with no instance", "region", region, "requests", ids)
}

// instanceID is what an EC2 instance ID looks like; anything else is no
// instance of this backend's.
var instanceID = regexp.MustCompile(`^i-[0-9a-f]{1,32}$`)

// terminateBatch is the most IDs one TerminateInstances call takes.
const terminateBatch = 1000

// Terminate cancels the spot requests of the instances and terminates them,
// in the regions the backend knows them in (from Launch and List) or, for
// IDs it does not know, in each region it has used until one has them. An
// ID no region has, one already terminated, or one not shaped like an
// instance ID is not an error.
func (b *Backend) Terminate(ctx context.Context, cloudIDs []string) error {
	byRegion := map[string][]string{}
	var unknown []string
	seen := map[string]bool{}
	b.mu.Lock()
	for _, id := range cloudIDs {
		if seen[id] || !instanceID.MatchString(id) {
			continue
		}
		seen[id] = true
		if r, ok := b.cloudRegion[id]; ok {
			byRegion[r] = append(byRegion[r], id)
		} else {
			unknown = append(unknown, id)
		}
	}
	b.mu.Unlock()
	var errs []error
	for region, ids := range byRegion {
		if _, err := b.terminateIn(ctx, region, ids); err != nil {
			errs = append(errs, err)
		}
	}
	for _, region := range b.usedRegions() {
		if len(unknown) == 0 {
			break
		}
		missing, err := b.terminateIn(ctx, region, unknown)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		unknown = missing
	}
	return errors.Join(errs...)
}

// terminateIn terminates ids in region, returning those EC2 does not have
// there.
func (b *Backend) terminateIn(ctx context.Context, region string, ids []string) (missing []string, err error) {
	c := b.client(region)
	for start := 0; start < len(ids); start += terminateBatch {
		batch := ids[start:min(start+terminateBatch, len(ids))]
		b.cancelSpotRequestsOf(ctx, c, region, batch)
		miss, err := b.terminateBatch(ctx, c, batch)
		if err != nil {
			return nil, err
		}
		missing = append(missing, miss...)
		if n := len(batch) - len(miss); n > 0 {
			b.log.Info("terminated", "region", region, "instances", without(batch, miss))
		}
	}
	return missing, nil
}

// terminateBatch terminates ids with one call where all exist. EC2 fails
// the whole call when any is unknown (InvalidInstanceID.NotFound or
// .Malformed), naming them: those are dropped and the rest tried again,
// or, when the message names none of them, each is tried alone.
func (b *Backend) terminateBatch(ctx context.Context, c ec2API, ids []string) (missing []string, err error) {
	for len(ids) > 0 {
		_, err := c.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: ids})
		if err == nil {
			return missing, nil
		}
		if !notFound(err) {
			return nil, classify("terminate", err)
		}
		_, msg, _ := awsError(err)
		named := namedIDs(msg, ids)
		if len(named) == 0 {
			if len(ids) == 1 {
				return append(missing, ids...), nil
			}
			for _, id := range ids {
				miss, err := b.terminateBatch(ctx, c, []string{id})
				if err != nil {
					return nil, err
				}
				missing = append(missing, miss...)
			}
			return missing, nil
		}
		missing = append(missing, named...)
		ids = without(ids, named)
	}
	return missing, nil
}

// notFound reports whether err is EC2 saying an instance ID is unknown.
func notFound(err error) bool {
	code := errCode(err)
	return code == "InvalidInstanceID.NotFound" || code == "InvalidInstanceID.Malformed"
}

// namedIDs are the ids msg names ("The instance IDs 'i-1, i-2' do not
// exist").
func namedIDs(msg string, ids []string) []string {
	words := map[string]bool{}
	for _, w := range strings.FieldsFunc(msg, func(r rune) bool {
		return !(r == '-' || r == '_' || r == '.' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z')
	}) {
		words[strings.TrimRight(w, ".")] = true
	}
	var out []string
	for _, id := range ids {
		if words[id] {
			out = append(out, id)
		}
	}
	return out
}

// without is ids less drop.
func without(ids, drop []string) []string {
	d := map[string]bool{}
	for _, id := range drop {
		d[id] = true
	}
	var out []string
	for _, id := range ids {
		if !d[id] {
			out = append(out, id)
		}
	}
	return out
}

// cancelSpotRequestsOf cancels the open or active spot requests of the
// instances, so that none launches a replacement. Failures are logged:
// a one-time request closes with its instance anyway.
func (b *Backend) cancelSpotRequestsOf(ctx context.Context, c ec2API, region string, ids []string) {
	var reqs []string
	for start := 0; start < len(ids); start += 200 {
		in := &ec2.DescribeSpotInstanceRequestsInput{Filters: []types.Filter{
			{Name: awssdk.String("instance-id"), Values: ids[start:min(start+200, len(ids))]},
			{Name: awssdk.String("state"), Values: []string{"open", "active"}},
		}}
		for pages := ec2.NewDescribeSpotInstanceRequestsPaginator(c, in); pages.HasMorePages(); {
			res, err := pages.NextPage(ctx)
			if err != nil {
				b.logOnce("spotterm:"+region+":"+errCode(err), "cannot look up the spot requests of instances to terminate", "region", region, "err", classify("terminate", err))
				return
			}
			for _, r := range res.SpotInstanceRequests {
				if r.State == types.SpotInstanceStateOpen || r.State == types.SpotInstanceStateActive {
					reqs = append(reqs, awssdk.ToString(r.SpotInstanceRequestId))
				}
			}
		}
	}
	if len(reqs) == 0 {
		return
	}
	if _, err := c.CancelSpotInstanceRequests(ctx, &ec2.CancelSpotInstanceRequestsInput{SpotInstanceRequestIds: reqs}); err != nil {
		if actionUnsupported(err) {
			b.noteUnsupported("CancelSpotInstanceRequests", "terminating spot instances without cancelling their requests")
			return
		}
		b.log.Warn("cannot cancel spot requests", "region", region, "requests", reqs, "err", classify("terminate", err))
		return
	}
	b.log.Info("cancelled spot requests", "region", region, "requests", reqs)
}
