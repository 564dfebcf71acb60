package autoscale_test

import (
	"log/slog"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/autoscale"
	"github.com/dstackai/dstack/backend"
	"github.com/dstackai/dstack/backend/aws"
	"github.com/dstackai/dstack/internal/ec2fake"
	"github.com/dstackai/dstack/store"
)

// The fault suite again, with the real AWS backend and SDK against an
// EC2-compatible server: the faults are EC2's own (throttling, capacity,
// 500s, lost and slow answers, instances that vanish or that nobody
// recorded), and after every pass neither the store nor EC2 has a limit
// over its maximum. In the end every job is done and EC2 runs nothing.

const (
	awsRegion = "eu-west-1"
	awsKey    = "AKIAAUTOSCALETEST001"
	awsSecret = "autoscale-test-secret"
)

// awsEnv is env (store, clock, user, controller) on an ec2fake account.
type awsEnv struct {
	*env
	fake *ec2fake.Server
	aws  *aws.Backend
}

func setupAWS(t *testing.T, tweak func(*autoscale.Config)) *awsEnv {
	t.Helper()
	e := setup(t) // the store, clock, user and server ID; its fake cloud goes unused
	fake := ec2fake.New(ec2fake.Options{Credentials: map[string]string{awsKey: awsSecret}, Logf: t.Logf})
	t.Cleanup(fake.Close)
	b, err := aws.New(aws.Config{AccessKeyID: awsKey, SecretAccessKey: awsSecret, Region: awsRegion,
		Endpoint: fake.URL(), RetryMaxAttempts: 2, LaunchRate: 1000, LaunchBurst: 1000,
		Logger: slog.New(slog.NewTextHandler(tWriter{t}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	a := &awsEnv{env: e, fake: fake, aws: b}
	a.c = a.controller(tweak)
	return a
}

func (a *awsEnv) controller(tweak func(*autoscale.Config)) *autoscale.Controller {
	return a.env.controller(func(c *autoscale.Config) {
		c.Backends = backend.NewSet(a.aws)
		c.LaunchTimeout = 2 * time.Second
		if tweak != nil {
			tweak(c)
		}
	})
}

func (a *awsEnv) limit(typ string, max int) {
	a.t.Helper()
	_, err := a.st.LimitPut(a.ctx, store.LimitPutParams{
		ID: "l-" + typ, UserID: a.user.ID, Backend: aws.Name, Region: awsRegion,
		InstanceType: typ, Max: max, Now: a.clock.Now(),
	})
	if err != nil {
		a.t.Fatal(err)
	}
}

// userDataToken is the join token a launch of one instance carries.
var userDataToken = regexp.MustCompile(`(?m)^token='([^']*)'`)

// token is the join token EC2 gave the instance: its tag, or its user data.
func (a *awsEnv) token(cloudID string) string {
	in, ok := a.fake.Instance(cloudID)
	if !ok {
		return ""
	}
	if tok := in.Tags[aws.TagJoinToken]; tok != "" {
		return tok
	}
	if m := userDataToken.FindStringSubmatch(in.UserData); m != nil {
		return m[1]
	}
	return ""
}

// join registers the runner of a launched instance, as its boot would.
func (a *awsEnv) join(in *store.Instance) *store.Runner {
	a.t.Helper()
	tok := a.token(in.CloudID)
	if tok == "" {
		return nil
	}
	_, r, err := a.st.InstanceRegister(a.ctx, store.InstanceRegisterParams{
		JoinTokenHash: autoscale.HashToken(tok),
		Runner: store.RunnerCreateParams{ID: "r-" + in.ID, Name: "r-" + in.ID, Executor: "shell", Version: "test",
			Resources: api.HostResources{CPUs: 2, MemoryMiB: 7 << 10}, TokenHash: "rt-" + in.ID,
			TokenExpiresAt: a.clock.Now().Add(24 * time.Hour), Now: a.clock.Now()},
	})
	if err != nil {
		a.t.Fatalf("join instance %s (%s): %v", in.ID, in.CloudID, err)
	}
	return r
}

// live counts EC2's instances of each limit that are not terminated.
func (a *awsEnv) live() map[string]int {
	out := map[string]int{}
	for _, in := range a.fake.Instances() {
		if in.State != "terminated" {
			out[in.Tags[backend.TagLimitID]]++
		}
	}
	return out
}

func (a *awsEnv) checkAWSLimits() {
	a.t.Helper()
	ls, err := a.st.LimitList(a.ctx, store.LimitListParams{})
	if err != nil {
		a.t.Fatal(err)
	}
	live := a.live()
	for _, l := range ls {
		if l.Instances > l.Max {
			a.t.Fatalf("limit %s counts %d instances, over its maximum %d", l.ID, l.Instances, l.Max)
		}
		if live[l.ID] > l.Max {
			a.t.Fatalf("EC2 has %d instances of limit %s, over its maximum %d", live[l.ID], l.ID, l.Max)
		}
	}
}

// recordOf is the record an EC2 instance names, read as the backend reads
// it: its record tag, or its launch index in the launch's record list.
func recordOf(in ec2fake.Instance) string {
	if rec := in.Tags[backend.TagRecordID]; rec != "" {
		return rec
	}
	if all := strings.Fields(in.Tags[aws.TagRecordIDs]); in.LaunchIndex >= 0 && in.LaunchIndex < len(all) {
		return all[in.LaunchIndex]
	}
	return ""
}

// checkEC2 checks EC2 after a pass: no two instances were ever given the
// same join token and, once the test has seen an instance for longer than
// allowance, it counts in its limit, none over its maximum, and no two such
// instances alive name the same record. seen holds when the test first saw
// each instance.
func (a *awsEnv) checkEC2(seen map[string]time.Time, allowance time.Duration) {
	a.t.Helper()
	ls, err := a.st.LimitList(a.ctx, store.LimitListParams{})
	if err != nil {
		a.t.Fatal(err)
	}
	now := a.clock.Now()
	tokens := map[string]string{}
	records := map[string]string{}
	live := map[string]int{}
	for _, in := range a.fake.Instances() {
		if tok := a.token(in.ID); tok != "" {
			if other, ok := tokens[tok]; ok {
				a.t.Fatalf("EC2 instances %s and %s were given the same join token", other, in.ID)
			}
			tokens[tok] = in.ID
		}
		if in.State == "terminated" {
			continue
		}
		first, ok := seen[in.ID]
		if !ok {
			seen[in.ID] = now
			first = now
		}
		if now.Sub(first) < allowance {
			continue
		}
		live[in.Tags[backend.TagLimitID]]++
		if rec := recordOf(in); rec != "" {
			if other, ok := records[rec]; ok {
				a.t.Fatalf("EC2 instances %s and %s both name record %s (seen for %s)", other, in.ID, rec, now.Sub(first))
			}
			records[rec] = in.ID
		}
	}
	for _, l := range ls {
		if l.Instances > l.Max {
			a.t.Fatalf("limit %s counts %d instances, over its maximum %d", l.ID, l.Instances, l.Max)
		}
		if live[l.ID] > l.Max {
			a.t.Fatalf("EC2 has %d instances of limit %s (seen for at least %s), over its maximum %d", live[l.ID], l.ID, allowance, l.Max)
		}
	}
}

func TestAWSFaults(t *testing.T) {
	t.Parallel()
	// The allowance of faults that start instances no record counts: the
	// grace period after the controller first lists one, and the pass in
	// which it does.
	const stray = grace + grace/2
	faults := []struct {
		name   string
		inject func(a *awsEnv)
		// allowance is how long EC2 may run an instance that is over its
		// limit or names a record another instance names.
		allowance time.Duration
	}{
		{"throttled", func(a *awsEnv) { a.fake.Throttle("RunInstances", 3) }, 0},
		{"internal error", func(a *awsEnv) { a.fake.Fail("RunInstances", "InternalError", "An internal error has occurred", 1) }, 0},
		{"no capacity: the next allowed offer", func(a *awsEnv) {
			a.fake.SetCapacity(awsRegion, "m5.large", false, 0)
			a.limit("c5.large", 2)
		}, 0},
		{"quota", func(a *awsEnv) {
			a.fake.Fail("RunInstances", "VcpuLimitExceeded", "You have requested more vCPU capacity than your current vCPU limit", 1)
			a.limit("c5.large", 2)
		}, 0},
		{"answers lost after the launch", func(a *awsEnv) { a.fake.LoseResponse("RunInstances", 2) }, 0},
		{"answer slower than the launch timeout", func(a *awsEnv) { a.fake.Delay("RunInstances", 5*time.Second, 1) }, 0},
		{"instances vanish", func(a *awsEnv) {
			a.step()
			for _, in := range a.fake.Instances() {
				a.fake.Kill(in.ID)
			}
		}, 0},
		{"an instance nobody recorded", func(a *awsEnv) {
			a.fake.AddInstance(ec2fake.Instance{Region: awsRegion, InstanceType: "m5.large", State: "running",
				Tags: map[string]string{backend.TagServerID: a.id, backend.TagLimitID: "l-deleted"}})
		}, 0},
		{"terminate fails once", func(a *awsEnv) {
			a.fake.Fail("TerminateInstances", "InternalError", "An internal error has occurred", 1)
		}, 0},
		{"describe fails", func(a *awsEnv) { a.fake.Fail("DescribeInstances", "Unavailable", "The service is unavailable", 2) }, 0},
		{"launch index repeated in the answer", func(a *awsEnv) { a.fake.RepeatLaunchIndex(1) }, 0},
		{"an instance left out of the answer, with the launch's tags", func(a *awsEnv) { a.fake.StrayInstance(1) }, stray},
		{"an instance tagged with a live record's ID", func(a *awsEnv) {
			// A pass launches one; a pass that fails on the way (a call
			// the SDK gave up on, on a busy machine) is followed by the
			// next, as the controller's loop does.
			for pass := range 5 {
				if err := a.c.Step(a.ctx); err != nil {
					a.t.Logf("pass %d: %v", pass, err)
				}
				a.checkLimits()
				for _, in := range a.fake.Instances() {
					if rec := in.Tags[backend.TagRecordID]; rec != "" {
						a.fake.AddInstance(ec2fake.Instance{Region: awsRegion, InstanceType: "m5.large", State: "running",
							Tags: map[string]string{backend.TagServerID: a.id, backend.TagLimitID: in.Tags[backend.TagLimitID], backend.TagRecordID: rec}})
						return
					}
				}
			}
			a.t.Fatal("no instance with a record tag after five passes")
		}, stray},
	}
	for _, fl := range faults {
		t.Run(fl.name, func(t *testing.T) {
			t.Parallel()
			a := setupAWS(t, nil)
			a.limit("m5.large", 2)
			jobs := []string{a.submit(small), a.submit(small), a.submit(small)}
			fl.inject(a)
			seen := map[string]time.Time{}
			for round := range 12 {
				if err := a.c.Step(a.ctx); err != nil {
					t.Logf("round %d: %v", round, err)
				}
				a.checkEC2(seen, fl.allowance)
				for _, in := range a.instances(store.InstanceLaunching) {
					if in.CloudID == "" {
						continue
					}
					if r := a.join(in); r != nil {
						if j := a.claim(r); j != nil {
							a.finish(j, r)
						}
					}
				}
				for _, r := range a.idleRunners() {
					if j := a.claim(r); j != nil {
						a.finish(j, r)
					}
				}
				a.clock.Advance(grace / 2)
			}
			a.fake.ClearFaults()
			a.clock.Advance(idleTimeout)
			for range 3 {
				if err := a.c.Step(a.ctx); err != nil {
					t.Logf("final: %v", err)
				}
				a.checkEC2(seen, fl.allowance)
				a.clock.Advance(grace)
			}
			for _, id := range jobs {
				if j := a.job(id); j.Status != api.StatusDone {
					t.Errorf("job %s is %s (%s), want done", id, j.Status, j.StatusReason)
				}
			}
			if live := a.live(); len(live) != 0 {
				t.Errorf("EC2 still runs instances after the idle timeout and the grace period: %v", live)
			}
			if n := len(a.instances(store.InstanceLaunching, store.InstanceRunning, store.InstanceTerminating)); n != 0 {
				t.Errorf("%d instance records still counted", n)
			}
		})
	}
}

// TestAWSLimitDecreaseTerminatesAtOnce: lowering a limit terminates the
// extra EC2 instances in the same pass, idle ones first.
func TestAWSLimitDecreaseTerminatesAtOnce(t *testing.T) {
	t.Parallel()
	a := setupAWS(t, nil)
	a.limit("m5.large", 3)
	for range 3 {
		a.submit(small)
	}
	a.step()
	var runners []*store.Runner
	for _, in := range a.instances(store.InstanceLaunching) {
		runners = append(runners, a.join(in))
	}
	if len(runners) != 3 {
		t.Fatalf("%d instances joined, want 3", len(runners))
	}
	busy := a.claim(runners[0])
	a.claim(runners[1])
	a.finish(a.claim(runners[2]), runners[2]) // the third is idle now
	if busy == nil {
		t.Fatal("no job claimed")
	}
	a.limit("m5.large", 1)
	a.step()
	if got := a.live()["l-m5.large"]; got != 1 {
		t.Fatalf("EC2 runs %d instances of the limit after it went down to 1, want 1", got)
	}
	for _, in := range a.fake.Instances() {
		if in.Tags[backend.TagRecordID] == runners[2].InstanceID && in.State != "terminated" {
			t.Errorf("the idle instance %s is %s, want terminated first", in.ID, in.State)
		}
	}
}

// TestAWSRestartKeepsInstancesOfOtherRegions: a backend made anew (a
// restart, credentials saved again) knows only its default region; the
// controller names the regions of its records before listing, so an
// instance running in another region is neither taken for gone nor
// launched twice.
func TestAWSRestartKeepsInstancesOfOtherRegions(t *testing.T) {
	t.Parallel()
	a := setupAWS(t, nil)
	_, err := a.st.LimitPut(a.ctx, store.LimitPutParams{ID: "l-us", UserID: a.user.ID, Backend: aws.Name,
		Region: "us-east-1", InstanceType: "m5.large", Max: 1, Now: a.clock.Now()})
	if err != nil {
		t.Fatal(err)
	}
	jobID := a.submit(small)
	a.step()
	ins := a.instances(store.InstanceLaunching)
	if len(ins) != 1 || ins[0].Region != "us-east-1" {
		t.Fatalf("launched %+v, want one instance in us-east-1", ins)
	}
	r := a.join(ins[0])
	claimed := a.claim(r)
	if claimed == nil || claimed.ID != jobID {
		t.Fatalf("the instance's runner claimed %v", claimed)
	}

	fresh, err := aws.New(aws.Config{AccessKeyID: awsKey, SecretAccessKey: awsSecret, Region: awsRegion,
		Endpoint: a.fake.URL(), RetryMaxAttempts: 2, LaunchRate: 1000, LaunchBurst: 1000})
	if err != nil {
		t.Fatal(err)
	}
	a.aws = fresh
	a.clock.Advance(leaseTTL)
	a.c = a.controller(nil)
	for range 3 {
		a.step()
		a.clock.Advance(grace)
	}
	if got, _ := a.st.InstanceGet(a.ctx, ins[0].ID); got.State != store.InstanceRunning {
		t.Fatalf("the us-east-1 instance's record is %s after a restart, want running", got.State)
	}
	if j := a.job(jobID); j.Status == api.StatusPending || j.Attempt != claimed.Attempt {
		t.Fatalf("the job was given back: %s, attempt %d (%s)", j.Status, j.Attempt, j.StatusReason)
	}
	if n := a.live()["l-us"]; n != 1 {
		t.Fatalf("EC2 runs %d instances of the us-east-1 limit of 1", n)
	}
}

// TestAWSSettleNeverLaunchesAnEndedRecord: a launch of two whose outcome
// was unknown (EC2 answered 500 to every attempt, launching nothing) is not
// called again once its limit went down to one and a record ended: that
// call would start two instances for a limit of one.
func TestAWSSettleNeverLaunchesAnEndedRecord(t *testing.T) {
	t.Parallel()
	a := setupAWS(t, nil)
	a.limit("m5.large", 2)
	a.submit(small)
	a.submit(small)
	a.fake.Fail("RunInstances", "InternalError", "An internal error has occurred", 2) // both SDK attempts
	if err := a.c.Step(a.ctx); err != nil {
		t.Logf("first pass: %v", err)
	}
	if n := len(a.fake.Instances()); n != 0 {
		t.Fatalf("EC2 runs %d instances after refusing every call", n)
	}
	a.limit("m5.large", 1)
	for range 4 {
		if err := a.c.Step(a.ctx); err != nil {
			t.Logf("pass: %v", err)
		}
		a.checkAWSLimits()
		a.clock.Advance(grace / 2)
	}
	if n := a.live()["l-m5.large"]; n != 1 {
		t.Fatalf("EC2 runs %d instances of the limit of 1, want 1", n)
	}
	if n := len(a.fake.Instances()); n != 1 {
		t.Fatalf("EC2 launched %d instances in all for a limit of 1, want 1 (terminated ones included)", n)
	}
}
