package aws

import (
	"context"
	"errors"
	"net"
	"strings"

	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/smithy-go"

	"github.com/dstackai/dstack/backend"
)

// ec2API is the part of EC2 the backend calls; *ec2.Client satisfies it.
type ec2API interface {
	DescribeRegions(context.Context, *ec2.DescribeRegionsInput, ...func(*ec2.Options)) (*ec2.DescribeRegionsOutput, error)
	DescribeInstanceTypeOfferings(context.Context, *ec2.DescribeInstanceTypeOfferingsInput, ...func(*ec2.Options)) (*ec2.DescribeInstanceTypeOfferingsOutput, error)
	DescribeInstanceTypes(context.Context, *ec2.DescribeInstanceTypesInput, ...func(*ec2.Options)) (*ec2.DescribeInstanceTypesOutput, error)
	DescribeSpotPriceHistory(context.Context, *ec2.DescribeSpotPriceHistoryInput, ...func(*ec2.Options)) (*ec2.DescribeSpotPriceHistoryOutput, error)
	DescribeImages(context.Context, *ec2.DescribeImagesInput, ...func(*ec2.Options)) (*ec2.DescribeImagesOutput, error)
	DescribeSecurityGroups(context.Context, *ec2.DescribeSecurityGroupsInput, ...func(*ec2.Options)) (*ec2.DescribeSecurityGroupsOutput, error)
	CreateSecurityGroup(context.Context, *ec2.CreateSecurityGroupInput, ...func(*ec2.Options)) (*ec2.CreateSecurityGroupOutput, error)
	RunInstances(context.Context, *ec2.RunInstancesInput, ...func(*ec2.Options)) (*ec2.RunInstancesOutput, error)
	CreateTags(context.Context, *ec2.CreateTagsInput, ...func(*ec2.Options)) (*ec2.CreateTagsOutput, error)
	DescribeInstances(context.Context, *ec2.DescribeInstancesInput, ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error)
	TerminateInstances(context.Context, *ec2.TerminateInstancesInput, ...func(*ec2.Options)) (*ec2.TerminateInstancesOutput, error)
	DescribeSpotInstanceRequests(context.Context, *ec2.DescribeSpotInstanceRequestsInput, ...func(*ec2.Options)) (*ec2.DescribeSpotInstanceRequestsOutput, error)
	CancelSpotInstanceRequests(context.Context, *ec2.CancelSpotInstanceRequestsInput, ...func(*ec2.Options)) (*ec2.CancelSpotInstanceRequestsOutput, error)
}

var _ ec2API = (*ec2.Client)(nil)

// Error codes by the kind of refusal they are. A code in none of them is
// an *backend.Error of no kind, unless it starts with "Invalid" (ErrInvalid).
var (
	noCapacityCodes = codeSet("InsufficientInstanceCapacity", "InsufficientCapacity", "InsufficientHostCapacity",
		"SpotMaxPriceTooLow", "capacity-not-available", "capacity-oversubscribed", "InsufficientCapacityOnHost")
	quotaCodes = codeSet("InstanceLimitExceeded", "VcpuLimitExceeded", "MaxSpotInstanceCountExceeded",
		"InsufficientFreeAddressesInSubnet", "SpotInstanceRequestLimitExceeded", "ResourceLimitExceeded")
	unsupportedCodes = codeSet("Unsupported", "InvalidInstanceType", "UnsupportedOperation", "UnsupportedHibernationConfiguration")
	throttledCodes   = codeSet("RequestLimitExceeded", "Throttling", "ThrottlingException", "RequestThrottled",
		"RequestThrottledException", "TooManyRequestsException", "PriorRequestNotComplete", "SlowDown")
	// actionCodes answer an action the endpoint does not implement: an
	// EC2-compatible endpoint may lack optional ones.
	actionCodes  = codeSet("InvalidAction", "UnsupportedOperation", "NotImplemented", "UnknownOperationException")
	invalidCodes = codeSet("AuthFailure", "UnauthorizedOperation", "IdempotentParameterMismatch", "MissingParameter",
		"OptInRequired", "Blocked", "SignatureDoesNotMatch", "AccessDenied", "AccessDeniedException",
		"UnrecognizedClientException", "InvalidClientTokenId", "VPCIdNotSpecified", "VPCResourceNotSpecified",
		"MissingInput", "PendingVerification")
)

func codeSet(codes ...string) map[string]bool {
	m := make(map[string]bool, len(codes))
	for _, c := range codes {
		m[c] = true
	}
	return m
}

// kindOf is the backend sentinel an AWS error code means, or nil.
func kindOf(code string) error {
	switch {
	case noCapacityCodes[code]:
		return backend.ErrNoCapacity
	case quotaCodes[code]:
		return backend.ErrQuota
	case unsupportedCodes[code], actionCodes[code]:
		return backend.ErrUnsupported
	case throttledCodes[code]:
		return backend.ErrThrottled
	case invalidCodes[code], strings.HasPrefix(code, "Invalid"):
		return backend.ErrInvalid
	}
	return nil
}

// actionUnsupported reports whether err says that the endpoint does not
// implement the action called.
func actionUnsupported(err error) bool { return actionCodes[errCode(err)] }

// awsError is err's AWS code and message, when it carries them.
func awsError(err error) (code, msg string, ok bool) {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode(), ae.ErrorMessage(), true
	}
	return "", "", false
}

// errCode is err's AWS code, or "".
func errCode(err error) string {
	code, _, _ := awsError(err)
	return code
}

// classify turns an SDK error of op into a *backend.Error carrying AWS's
// code and message and the kind the code means. The context's own errors
// are returned as they are (the outcome of the call is unknown), and an
// unknown host is ErrInvalid (a region that does not exist).
func classify(op string, err error) error {
	if err == nil {
		return nil
	}
	var be *backend.Error
	if errors.As(err, &be) {
		return err
	}
	if code, msg, ok := awsError(err); ok {
		// Some endpoints start the message with the code: say it once.
		msg = strings.TrimSpace(strings.TrimPrefix(msg, code+":"))
		return &backend.Error{Kind: kindOf(code), Op: op, Code: code, Reason: msg, Err: err}
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	var dns *net.DNSError
	if errors.As(err, &dns) && dns.IsNotFound {
		return &backend.Error{Kind: backend.ErrInvalid, Op: op, Code: "UnknownEndpoint",
			Reason: "no EC2 endpoint " + dns.Name + ": is the region right?", Err: err}
	}
	return &backend.Error{Op: op, Err: err}
}
