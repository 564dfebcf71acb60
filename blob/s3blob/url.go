package s3blob

import (
	"fmt"
	"net"
	"net/url"
	"strings"

	"github.com/dstackai/dstack/blob"
)

// Location is where a Store keeps its objects: a bucket and a key prefix
// that is either empty or ends with "/".
type Location struct {
	Bucket string
	Prefix string
}

// String returns the location as an s3:// URL that ParseURL accepts.
func (l Location) String() string {
	u := url.URL{Scheme: "s3", Host: l.Bucket, Path: "/" + l.Prefix}
	return u.String()
}

// ParseURL parses "s3://bucket" or "s3://bucket/prefix". The prefix is
// optional; when present it must be a clean relative path (no ".", ".." or
// empty elements); a trailing slash is allowed and implied.
func ParseURL(raw string) (Location, error) {
	const want = "want s3://bucket or s3://bucket/prefix"
	if strings.TrimSpace(raw) == "" {
		return Location{}, fmt.Errorf("empty S3 URL: %s", want)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return Location{}, fmt.Errorf("S3 URL %q: %w; %s", raw, err, want)
	}
	switch {
	case u.Scheme != "s3":
		return Location{}, fmt.Errorf("S3 URL %q: scheme %q is not s3; %s", raw, u.Scheme, want)
	case u.Opaque != "":
		return Location{}, fmt.Errorf("S3 URL %q: missing // after s3:; %s", raw, want)
	case u.User != nil:
		return Location{}, fmt.Errorf("S3 URL %q: credentials do not belong in the URL; set the access key in the configuration or the AWS environment", raw)
	case u.Port() != "" || strings.HasSuffix(u.Host, ":"):
		return Location{}, fmt.Errorf("S3 URL %q: a port does not belong in the URL; set the endpoint (e.g. http://localhost:9000) instead", raw)
	case u.RawQuery != "" || u.ForceQuery:
		return Location{}, fmt.Errorf("S3 URL %q: query parameters are not supported; %s", raw, want)
	case u.Fragment != "" || strings.Contains(raw, "#"):
		return Location{}, fmt.Errorf("S3 URL %q: a fragment (#) is not supported; %s", raw, want)
	}
	if err := validBucket(u.Host); err != nil {
		return Location{}, fmt.Errorf("S3 URL %q: %w", raw, err)
	}
	prefix := strings.TrimPrefix(u.Path, "/")
	prefix = strings.TrimSuffix(prefix, "/")
	if prefix != "" {
		if !blob.ValidKey(prefix) {
			return Location{}, fmt.Errorf("S3 URL %q: prefix %q must be a clean relative path without \".\", \"..\" or empty elements", raw, prefix)
		}
		prefix += "/"
	}
	return Location{Bucket: u.Host, Prefix: prefix}, nil
}

// validBucket checks a bucket name against the S3 naming rules for new
// buckets: 3 to 63 characters, lowercase letters, digits, dots and hyphens,
// beginning and ending with a letter or digit, not shaped like an IP address.
func validBucket(b string) error {
	if b == "" {
		return fmt.Errorf("no bucket name; want s3://bucket or s3://bucket/prefix")
	}
	if len(b) < 3 || len(b) > 63 {
		return fmt.Errorf("bucket name %q must be 3 to 63 characters long", b)
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '.' || c == '-':
			if i == 0 || i == len(b)-1 {
				return fmt.Errorf("bucket name %q must begin and end with a lowercase letter or digit", b)
			}
		default:
			return fmt.Errorf("bucket name %q may hold only lowercase letters, digits, dots and hyphens", b)
		}
	}
	if strings.Contains(b, "..") {
		return fmt.Errorf("bucket name %q must not contain two adjacent dots", b)
	}
	if net.ParseIP(b) != nil {
		return fmt.Errorf("bucket name %q must not be an IP address", b)
	}
	return nil
}
