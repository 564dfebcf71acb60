package s3blob

import (
	"strings"
	"testing"

	"github.com/dstackai/dstack/blob"
)

func TestParseURL(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in      string
		want    Location
		wantErr string
	}{
		{in: "s3://my-bucket", want: Location{Bucket: "my-bucket"}},
		{in: "s3://my-bucket/", want: Location{Bucket: "my-bucket"}},
		{in: "s3://my.bucket.1/dstack", want: Location{Bucket: "my.bucket.1", Prefix: "dstack/"}},
		{in: "s3://b12/team/a/", want: Location{Bucket: "b12", Prefix: "team/a/"}},
		{in: "s3://b12/team%20x/a", want: Location{Bucket: "b12", Prefix: "team x/a/"}},
		{in: "", wantErr: "empty S3 URL"},
		{in: "   ", wantErr: "empty S3 URL"},
		{in: "my-bucket", wantErr: `scheme "" is not s3`},
		{in: "https://my-bucket.s3.amazonaws.com", wantErr: `scheme "https" is not s3`},
		{in: "S3://my-bucket", want: Location{Bucket: "my-bucket"}}, // schemes are case-insensitive
		{in: "s3:my-bucket", wantErr: "missing //"},
		{in: "s3://", wantErr: "no bucket name"},
		{in: "s3:///prefix", wantErr: "no bucket name"},
		{in: "s3://key:secret@my-bucket", wantErr: "credentials do not belong"},
		{in: "s3://my-bucket:9000", wantErr: "a port does not belong"},
		{in: "s3://my-bucket:", wantErr: "a port does not belong"},
		{in: "s3://my-bucket?region=x", wantErr: "query parameters"},
		{in: "s3://my-bucket/p?", wantErr: "query parameters"},
		{in: "s3://my-bucket/p#frag", wantErr: "fragment"},
		{in: "s3://ab", wantErr: "3 to 63"},
		{in: "s3://" + strings.Repeat("a", 64), wantErr: "3 to 63"},
		{in: "s3://My-Bucket", wantErr: "lowercase letters"},
		{in: "s3://my_bucket", wantErr: "lowercase letters"},
		{in: "s3://-bucket", wantErr: "begin and end"},
		{in: "s3://bucket.", wantErr: "begin and end"},
		{in: "s3://my..bucket", wantErr: "adjacent dots"},
		{in: "s3://192.168.1.10", wantErr: "IP address"},
		{in: "s3://my-bucket/a//b", wantErr: "clean relative path"},
		{in: "s3://my-bucket/a/../b", wantErr: "clean relative path"},
		{in: "s3://my-bucket/./a", wantErr: "clean relative path"},
		{in: "s3://my-bucket//a", wantErr: "clean relative path"},
		{in: "s3://my-bucket/a\\b", wantErr: "clean relative path"},
		{in: "s3://my-bucket/a%00b", wantErr: "clean relative path"},
		{in: "s3://my-bucket/%zz", wantErr: "invalid URL escape"},
	} {
		got, err := ParseURL(tc.in)
		switch {
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("ParseURL(%q) = %+v, %v; want an error mentioning %q", tc.in, got, err, tc.wantErr)
		case tc.wantErr == "" && (err != nil || got != tc.want):
			t.Errorf("ParseURL(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

// FuzzParseURL: whatever ParseURL accepts names a valid bucket and a clean
// prefix, and prints back to a URL that parses to the same location.
func FuzzParseURL(f *testing.F) {
	for _, s := range []string{"s3://b12", "s3://my-bucket/a/b/", "s3://a.b.c/x%2Fy", "s3://k:s@b/x", "s3://b:1/", "s3:b", "s3://b/../x", "s3://1.2.3.4"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		loc, err := ParseURL(raw)
		if err != nil {
			if loc != (Location{}) {
				t.Fatalf("ParseURL(%q) failed with a location %+v", raw, loc)
			}
			return
		}
		if err := validBucket(loc.Bucket); err != nil {
			t.Fatalf("ParseURL(%q) accepted bucket %q: %v", raw, loc.Bucket, err)
		}
		if loc.Prefix != "" && (!strings.HasSuffix(loc.Prefix, "/") || !blob.ValidKey(strings.TrimSuffix(loc.Prefix, "/"))) {
			t.Fatalf("ParseURL(%q) accepted prefix %q", raw, loc.Prefix)
		}
		again, err := ParseURL(loc.String())
		if err != nil || again != loc {
			t.Fatalf("ParseURL(%q) = %+v, but its String %q parses to %+v, %v", raw, loc, loc.String(), again, err)
		}
	})
}
