package s3blob

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/smithy-go"

	"github.com/dstackai/dstack/blob"
)

// errorInfo returns the HTTP status of a failed S3 call (0 when no response
// came back) and the S3 error code ("" when there was none, as for HEAD).
func errorInfo(err error) (status int, code string) {
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		status = re.HTTPStatusCode()
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		code = ae.ErrorCode()
	}
	return status, code
}

// objectError maps the error of a call on one object: a missing key is
// blob.ErrNotFound, a missing bucket is not.
func objectError(op, key string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s %s: %w", op, key, err)
	}
	status, code := errorInfo(err)
	switch {
	case code == "NoSuchBucket":
		return fmt.Errorf("%s %s: the S3 bucket no longer exists: %w", op, key, err)
	case code == "NoSuchKey" || code == "NotFound" || status == http.StatusNotFound:
		return fmt.Errorf("%s %s: %w", op, key, blob.ErrNotFound)
	}
	return fmt.Errorf("%s %s: %w", op, key, err)
}

// isInvalidRange reports a ranged GET that starts at or past the end.
func isInvalidRange(err error) bool {
	status, code := errorInfo(err)
	return code == "InvalidRange" || status == http.StatusRequestedRangeNotSatisfiable
}

// bucketError explains a failure to use the bucket in words a user can act
// on; where is the endpoint or region that was asked.
func bucketError(loc Location, where string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("S3 %s: %w", loc, err)
	}
	status, code := errorInfo(err)
	switch {
	case status == http.StatusNotFound || code == "NoSuchBucket" || code == "NotFound":
		return fmt.Errorf("S3 bucket %q not found at %s: create it, or fix the bucket in %s: %w", loc.Bucket, where, loc, err)
	case status == http.StatusForbidden || code == "AccessDenied" || code == "InvalidAccessKeyId" || code == "SignatureDoesNotMatch":
		return fmt.Errorf("access to S3 bucket %q at %s denied: check the credentials (the configured access key, or the AWS default chain) and the bucket's policy: %w", loc.Bucket, where, err)
	case status == http.StatusMovedPermanently || code == "PermanentRedirect" || code == "AuthorizationHeaderMalformed":
		return fmt.Errorf("S3 bucket %q is not in %s: set the bucket's region: %w", loc.Bucket, where, err)
	case status == 0:
		return fmt.Errorf("cannot reach S3 bucket %q at %s: check the endpoint, the network and the credentials: %w", loc.Bucket, where, err)
	}
	return fmt.Errorf("S3 bucket %q at %s: %w", loc.Bucket, where, err)
}
