package e2e

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/internal/ec2fake"
	"github.com/dstackai/dstack/internal/testutil"
)

// checkpointProject is a job that counts 30 epochs, one a second, saving
// each as a file of ckpt/, and starts after the last one it finds there.
var checkpointProject = map[string]string{
	".dstack/workflows.yaml": `workflows:
  - name: train
    provider: bash
    commands: [sh train.sh]
    checkpoints: [ckpt]
    checkpoint-interval: 2s
    resources: {interruptible: true}
  - name: flaky
    provider: bash
    commands: [FAIL_AT=8 sh train.sh]
    checkpoints: [ckpt]
    checkpoint-interval: 1h
`,
	"train.sh": `set -e
mkdir -p ckpt
last=$(ls ckpt | tail -n 1)
start=0
if [ -n "$last" ]; then start=$(expr "${last#epoch-}" + 0); fi
echo "attempt ${DSTACK_ATTEMPT} resumed=${DSTACK_RESUMED:-0} starting after epoch $start"
i=$((start + 1))
while [ $i -le 30 ]; do
  sleep 1
  printf 'epoch %d\n' $i > "ckpt/epoch-$(printf %02d $i)"
  echo "epoch $i"
  if [ "$i" = "${FAIL_AT:-}" ] && [ -z "${DSTACK_RESUMED:-}" ]; then echo "failing at epoch $i"; exit 3; fi
  i=$((i + 1))
done
echo "all 30 epochs done"
`,
}

// checkpointEpochs is how many epochs the job's latest checkpoint holds.
func checkpointEpochs(r api.Run) int {
	if len(r.Jobs) == 0 || r.Jobs[0].Checkpoint == nil {
		return 0
	}
	return r.Jobs[0].Checkpoint.Files
}

var startRe = regexp.MustCompile(`(?m)^attempt (\d+) resumed=(\d) starting after epoch (\d+)$`)

// checkResumed checks the log of a run interrupted once: the second attempt
// is marked, starts after an epoch at least synced, and counts every epoch
// after it once, to 30.
func checkResumed(t *testing.T, log string, synced int) {
	t.Helper()
	i := strings.Index(log, "--- attempt 2 of ")
	if i < 0 {
		t.Fatalf("no attempt marker in the log:\n%s", log)
	}
	second := log[i:]
	m := startRe.FindStringSubmatch(second)
	if m == nil || m[1] != "2" || m[2] != "1" {
		t.Fatalf("the second attempt does not say it was resumed (DSTACK_ATTEMPT=2, DSTACK_RESUMED=1):\n%s", log)
	}
	start, _ := strconv.Atoi(m[3])
	if start < synced || start < 5 {
		t.Fatalf("the second attempt started after epoch %d; the checkpoint held %d:\n%s", start, synced, log)
	}
	for e := 1; e <= 30; e++ {
		n := strings.Count(second, fmt.Sprintf("\nepoch %d\n", e))
		if want := map[bool]int{true: 1, false: 0}[e > start]; n != want {
			t.Fatalf("epoch %d appears %d times after the marker, want %d:\n%s", e, n, want, log)
		}
	}
	if !strings.Contains(second, "all 30 epochs done") || !strings.Contains(second, "restored checkpoint") {
		t.Fatalf("the second attempt did not finish from a restored checkpoint:\n%s", log)
	}
	t.Logf("checkpoint held %d epochs; the second attempt started after epoch %d", synced, start)
}

// A spot interruption notice mid-job: the runner syncs the job's
// checkpoints at once, gives the job back, and the next attempt, on another
// runner, starts from them.
func TestCheckpointSpotNotice(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test: skipped with -short")
	}
	t.Parallel()
	fake := ec2fake.New(ec2fake.Options{})
	t.Cleanup(fake.Close)
	id := fake.AddInstance(ec2fake.Instance{InstanceType: "m5.large", Spot: true})
	c := newCluster(t, "")
	proj := project(t, checkpointProject)
	env := append(c.configRunner("spot", c.Token), "DSTACK_WATCH_SPOT_INTERRUPTION=1", "DSTACK_IMDS_ENDPOINT="+fake.IMDSURL(id))
	spot := c.start("runner spot", "", env, bins.runner, "start")
	testutil.EventuallyWithin(t, startTimeout, "runner spot to register", func() bool {
		return spot.exited() || strings.Contains(spot.stdout(), "waiting for jobs")
	})
	name := runName(t, c.dstack(proj, "run", "-d", "train").stdout)
	c.waitRun(name, "to have a checkpoint of 10 epochs", func(r api.Run) bool { return checkpointEpochs(r) >= 10 })
	fake.Interrupt(id, 2*time.Minute)
	run := c.waitRun(name, "to be given back", func(r api.Run) bool { return r.Jobs[0].Attempt == 1 })
	synced := checkpointEpochs(run)
	// The user sees it, before the next attempt starts.
	if r := c.dstack("", "ps"); r.code != 0 || !strings.Contains(r.stdout, name+" train: checkpoint saved ") {
		t.Errorf("dstack ps does not show the checkpoint:\n%s", r)
	}
	if r := c.dstack("", "artifacts", "list", name, "--checkpoints"); r.code != 0 || !strings.Contains(r.stdout, "ckpt/epoch-01") {
		t.Errorf("dstack artifacts list --checkpoints does not list the files:\n%s", r)
	}
	c.startRunner("ondemand")
	c.waitStatus(name, api.StatusDone)
	r := c.dstack("", "logs", name)
	if r.code != 0 {
		t.Fatalf("%s", r)
	}
	checkResumed(t, r.stdout, synced)
	if !strings.Contains(r.stdout, "checkpoint ") || !strings.Contains(r.stdout, " saved: ") {
		t.Errorf("the interrupted attempt does not say it saved a checkpoint:\n%s", r.stdout)
	}
	// Done: the checkpoint is gone.
	if run := c.run(name); run.Jobs[0].Checkpoint != nil {
		t.Errorf("the done job still has a checkpoint: %+v", run.Jobs[0].Checkpoint)
	}
}

// A runner killed with no notice: the job's next attempt starts from the
// last checkpoint synced before.
func TestCheckpointRunnerKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test: skipped with -short")
	}
	t.Parallel()
	c := newCluster(t, "", "--heartbeat-timeout", "3s")
	proj := project(t, checkpointProject)
	first := c.startRunner("first")
	name := runName(t, c.dstack(proj, "run", "-d", "train").stdout)
	c.waitRun(name, "to have a checkpoint of 10 epochs", func(r api.Run) bool { return checkpointEpochs(r) >= 10 })
	first.stop(t, syscall.SIGKILL)
	// No sync completes after the kill: what is there now is the latest.
	synced := checkpointEpochs(c.run(name))
	c.waitRun(name, "to be requeued", func(r api.Run) bool { return r.Jobs[0].Attempt == 1 })
	c.startRunner("second")
	c.waitStatus(name, api.StatusDone)
	r := c.dstack("", "logs", name)
	if r.code != 0 {
		t.Fatalf("%s", r)
	}
	checkResumed(t, r.stdout, synced)
}

// `dstack run --resume` runs a failed run's job again from the checkpoint
// its failure saved.
func TestCheckpointResume(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test: skipped with -short")
	}
	t.Parallel()
	c := newCluster(t, "")
	proj := project(t, checkpointProject)
	c.startRunner("r")
	name := runName(t, c.dstack(proj, "run", "-d", "flaky").stdout)
	c.waitStatus(name, api.StatusFailed)
	r := c.dstack("", "run", "--resume", name)
	if r.code != 0 || !strings.Contains(r.stderr, "RUN "+name+" resumed: flaky (attempt 2, checkpoint saved") {
		t.Fatalf("%s", r)
	}
	r = c.dstack("", "logs", name)
	if !strings.Contains(r.stdout, "failing at epoch 8") {
		t.Fatalf("the first attempt did not fail at epoch 8:\n%s", r.stdout)
	}
	checkResumed(t, r.stdout, 8)
	if r := c.dstack("", "run", "--resume", name); r.code == 0 || !strings.Contains(r.stderr, "nothing to resume") {
		t.Errorf("resume of a done run: %s", r)
	}
}
