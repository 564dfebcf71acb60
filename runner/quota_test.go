package runner

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/dstackai/dstack/api"
)

// TestArtifactOverQuotaFailsTheJob: an artifact the server refuses because
// the user's storage quota is full fails the job at once, saying so, rather
// than holding it until the user frees room.
func TestArtifactOverQuotaFailsTheJob(t *testing.T) {
	t.Parallel()
	f := setup(t)
	code := f.uploadCode(t, nil)
	sum := sha256.Sum256([]byte(f.srv.AdminToken))
	admin, err := f.srv.Store().UserGetByTokenHash(context.Background(), hex.EncodeToString(sum[:]))
	if err != nil {
		t.Fatal(err)
	}
	quota := int64(64 << 10)
	if err := f.srv.SetUserStorageQuota(context.Background(), admin.ID, &quota); err != nil {
		t.Fatal(err)
	}
	run := f.submit(t, code, api.JobSpec{Workflow: "w", Commands: []string{"mkdir -p out && head -c 200000 /dev/zero > out/big"}, Artifacts: []string{"out"}})
	j := f.waitStatus(t, run.Name, "w", finished)
	if j.Status != api.StatusFailed || !strings.Contains(j.StatusReason, "storage quota exceeded") {
		t.Fatalf("job %s (%q), want failed over the storage quota", j.Status, j.StatusReason)
	}
}
