package backend

import (
	"errors"
	"fmt"
	"testing"
)

func TestOfferKey(t *testing.T) {
	t.Parallel()
	o := Offer{Backend: "aws", Region: "eu-west-1", InstanceType: "m5.xlarge", Spot: true, CPUs: 4, MemoryMiB: 15 << 10}
	k := o.Key()
	if want := (OfferKey{Backend: "aws", Region: "eu-west-1", InstanceType: "m5.xlarge", Spot: true}); k != want {
		t.Fatalf("Key() = %+v, want %+v", k, want)
	}
	if got, want := k.String(), "aws/eu-west-1/m5.xlarge/spot"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	k.Spot = false
	if got, want := k.String(), "aws/eu-west-1/m5.xlarge/on-demand"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if r := o.Resources(); r.CPUs != 4 || r.MemoryMiB != 15<<10 || len(r.GPUs) != 0 {
		t.Errorf("Resources() = %+v", r)
	}
}

func TestErrorIs(t *testing.T) {
	t.Parallel()
	sdk := errors.New("api error InsufficientInstanceCapacity: We currently do not have sufficient capacity")
	tests := []struct {
		name        string
		err         error
		kind        error
		unavailable bool
		reason      string
		text        string
	}{
		{
			name:        "capacity wrapping the SDK error",
			err:         &Error{Kind: ErrNoCapacity, Op: "launch", Code: "InsufficientInstanceCapacity", Reason: "no room in eu-west-1a", Err: sdk},
			kind:        ErrNoCapacity,
			unavailable: true,
			reason:      "InsufficientInstanceCapacity: no room in eu-west-1a",
			text:        "launch: no capacity: InsufficientInstanceCapacity: no room in eu-west-1a: " + sdk.Error(),
		},
		{
			name:        "quota, wrapped again with context",
			err:         fmt.Errorf("launch m5.xlarge: %w", Errorf(ErrQuota, "launch", "VcpuLimitExceeded", "you have requested more vCPU capacity than your current vCPU limit of %d", 32)),
			kind:        ErrQuota,
			unavailable: true,
			reason:      "VcpuLimitExceeded: you have requested more vCPU capacity than your current vCPU limit of 32",
			text:        "launch m5.xlarge: launch: quota exceeded: VcpuLimitExceeded: you have requested more vCPU capacity than your current vCPU limit of 32",
		},
		{
			name:   "throttled is not unavailability",
			err:    Errorf(ErrThrottled, "launch", "RequestLimitExceeded", "Request limit exceeded."),
			kind:   ErrThrottled,
			reason: "RequestLimitExceeded: Request limit exceeded.",
			text:   "launch: throttled: RequestLimitExceeded: Request limit exceeded.",
		},
		{
			name:        "bare sentinel",
			err:         fmt.Errorf("offers: %w", ErrUnsupported),
			kind:        ErrUnsupported,
			unavailable: true,
			reason:      "offers: not offered",
			text:        "offers: not offered",
		},
		{
			name:   "invalid with only a code",
			err:    &Error{Kind: ErrInvalid, Code: "InvalidParameterValue"},
			kind:   ErrInvalid,
			reason: "InvalidParameterValue",
			text:   "invalid request: InvalidParameterValue",
		},
		{
			name:   "no kind",
			err:    &Error{Op: "list", Err: sdk},
			reason: "list: " + sdk.Error(),
			text:   "list: " + sdk.Error(),
		},
	}
	all := []error{ErrNoCapacity, ErrQuota, ErrUnsupported, ErrInvalid, ErrThrottled}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			for _, s := range all {
				if got, want := errors.Is(tc.err, s), s == tc.kind; got != want { //nolint:errorlint // compares kinds, both sentinels
					t.Errorf("errors.Is(err, %v) = %v, want %v", s, got, want)
				}
			}
			if got := Unavailable(tc.err); got != tc.unavailable {
				t.Errorf("Unavailable = %v, want %v", got, tc.unavailable)
			}
			if got := Reason(tc.err); got != tc.reason {
				t.Errorf("Reason = %q, want %q", got, tc.reason)
			}
			if got := tc.err.Error(); got != tc.text {
				t.Errorf("Error() = %q, want %q", got, tc.text)
			}
		})
	}
	if !errors.Is(&Error{Kind: ErrNoCapacity, Err: sdk}, sdk) {
		t.Error("errors.Is does not reach the wrapped cause")
	}
	if Reason(nil) != "" || Unavailable(nil) {
		t.Error("a nil error has a reason or is unavailability")
	}
	if got := (&Error{}).Error(); got != "backend error" {
		t.Errorf("empty Error() = %q", got)
	}
}
