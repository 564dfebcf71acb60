package aws

import (
	"errors"
	"testing"

	"github.com/dstackai/dstack/backend"
)

// TestCheckFailureOfAWSIsNotARefusal: when EC2 fails or is unavailable,
// Check says so without calling the credentials invalid, so that the
// server asks to try again; a refusal of the key is still ErrInvalid.
func TestCheckFailureOfAWSIsNotARefusal(t *testing.T) {
	t.Parallel()
	e := setup(t)
	for _, code := range []string{"InternalError", "InternalFailure", "Unavailable", "RequestLimitExceeded", "ServiceUnavailable"} {
		e.fake.Fail("DescribeRegions", code, "AWS is having a moment", -1)
		err := e.b.Check(ctx(t))
		e.fake.ClearFaults()
		be := assertKind(t, err, nil, code)
		if errors.Is(err, backend.ErrInvalid) {
			t.Errorf("%s: %v is ErrInvalid: the credentials would be reported refused", code, err)
		}
		if be.Op != "check" {
			t.Errorf("%s: op %q, want check", code, be.Op)
		}
	}
	for _, code := range []string{"AuthFailure", "UnauthorizedOperation", "SignatureDoesNotMatch", "InvalidClientTokenId",
		"OptInRequired", "InvalidParameterValue", "Blocked", "PendingVerification"} {
		e.fake.Fail("DescribeRegions", code, "refused", 1)
		assertKind(t, e.b.Check(ctx(t)), backend.ErrInvalid, code)
	}
	if err := e.b.Check(ctx(t)); err != nil {
		t.Fatalf("Check once EC2 answers again: %v", err)
	}
}
