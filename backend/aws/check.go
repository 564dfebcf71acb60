package aws

import (
	"context"
	"errors"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/dstackai/dstack/backend"
)

// Check proves the credentials and the default region with one call in the
// region (DescribeRegions of itself): a refusal (AuthFailure,
// UnauthorizedOperation, a region that does not exist or is not enabled
// for the account) is a *backend.Error of kind backend.ErrInvalid carrying
// AWS's code and message, for the user to read.
//
// An endpoint without DescribeRegions (an EC2-compatible one) is asked
// DescribeInstances instead, which proves the credentials but not the
// region: the configured one is used as given, and Notes says so.
func (b *Backend) Check(ctx context.Context) error {
	region := b.cfg.Region
	out, err := b.client(region).DescribeRegions(ctx, &ec2.DescribeRegionsInput{
		AllRegions:  awssdk.Bool(true),
		RegionNames: []string{region},
	})
	if actionUnsupported(err) {
		_, err = b.client(region).DescribeInstances(ctx, &ec2.DescribeInstancesInput{MaxResults: awssdk.Int32(5)})
		if err == nil {
			b.noteUnsupported("DescribeRegions", "using the configured region "+region)
			return nil
		}
	}
	if err != nil {
		err = classify("check", err)
		var be *backend.Error
		if errors.As(err, &be) && be.Code != "" && refusesCredentials(be.Code) {
			be.Kind = backend.ErrInvalid
		}
		return err
	}
	for _, r := range out.Regions {
		if awssdk.ToString(r.RegionName) != region {
			continue
		}
		switch st := awssdk.ToString(r.OptInStatus); st {
		case "", "opt-in-not-required", "opted-in":
			return nil
		default:
			return backend.Errorf(backend.ErrInvalid, "check", "OptInRequired",
				"region %s is not enabled for this AWS account (%s): enable it in the AWS console (Account → AWS Regions) or choose another", region, st)
		}
	}
	return backend.Errorf(backend.ErrInvalid, "check", "InvalidRegion", "EC2 has no region %q", region)
}

// refusesCredentials reports whether an AWS error code of the check means
// that the credentials or the region are refused: a code of kind
// ErrInvalid, or one that AWS's services answer to a key they do not
// accept (the STS and S3 spellings included).
func refusesCredentials(code string) bool {
	return kindOf(code) == backend.ErrInvalid || authCodes[code] //nolint:errorlint // compares kinds, both sentinels
}

// authCodes are the codes of a refused access key beside those kindOf
// already reads as ErrInvalid.
var authCodes = codeSet("AuthFailure", "UnauthorizedOperation", "SignatureDoesNotMatch", "InvalidClientTokenId",
	"OptInRequired", "AccessDenied", "AccessDeniedException", "UnrecognizedClientException", "InvalidAccessKeyId",
	"ExpiredToken", "ExpiredTokenException", "RequestExpired", "InvalidToken", "MissingAuthenticationToken",
	"NotAuthorized", "AccountProblem", "Blocked", "PendingVerification", "IncompleteSignature")
