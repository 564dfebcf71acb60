package ec2fake

import (
	"context"
	"encoding/xml"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

func TestWildcardMatch(t *testing.T) {
	t.Parallel()
	tests := []struct {
		pattern, s string
		want       bool
	}{
		{"ubuntu/images/*-amd64-*", "ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-amd64-server-20241002", true},
		{"ubuntu/images/*-arm64-*", "ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-amd64-server-20241002", false},
		{"m5.?large", "m5.xlarge", true},
		{"m5.?large", "m5.large", false},
		{"*", "", true},
		{"", "", true},
		{"a*b*c", "abxbc", true},
		{"a*b*c", "abxbd", false},
	}
	for _, tt := range tests {
		if got := wildcardMatch(tt.pattern, tt.s); got != tt.want {
			t.Errorf("wildcardMatch(%q, %q) = %v", tt.pattern, tt.s, got)
		}
	}
}

func FuzzWildcardMatch(f *testing.F) {
	f.Add("ubuntu/*-amd64-*", "ubuntu/x-amd64-y")
	f.Add("a?c*", "abcd")
	f.Fuzz(func(t *testing.T, pattern, s string) {
		var re strings.Builder
		re.WriteString(`(?s)^`)
		for _, c := range pattern {
			switch c {
			case '*':
				re.WriteString(`.*`)
			case '?':
				re.WriteString(`.`)
			default:
				re.WriteString(regexp.QuoteMeta(string(c)))
			}
		}
		re.WriteString(`$`)
		if got, want := wildcardMatch(pattern, s), regexp.MustCompile(re.String()).MatchString(s); got != want {
			t.Errorf("wildcardMatch(%q, %q) = %v, regexp says %v", pattern, s, got, want)
		}
	})
}

// FuzzRequest posts arbitrary forms: the fake answers each with well-formed
// XML, never panics, and keeps its state consistent.
func FuzzRequest(f *testing.F) {
	f.Add("Action=DescribeInstances&Filter.1.Name=tag:a&Filter.1.Value.1=b&MaxResults=5")
	f.Add("Action=RunInstances&ImageId=ami-1&InstanceType=m5.large&MinCount=1&MaxCount=2&TagSpecification.1.ResourceType=instance&TagSpecification.1.Tag.1.Key=a")
	f.Add("Action=DescribeInstanceTypes&NextToken=RGVzY3JpYmVJbnN0YW5jZVR5cGVzOjU&MaxResults=5")
	f.Add("Action=AuthorizeSecurityGroupIngress&GroupName=default&IpPermissions.1.IpProtocol=tcp&IpPermissions.1.FromPort=1&IpPermissions.1.ToPort=2&IpPermissions.1.IpRanges.1.CidrIp=10.0.0.0/8")
	f.Add("Action=TerminateInstances&InstanceId.1=i-1&InstanceId.99999999999999999999=x")
	srv := New(Options{})
	f.Cleanup(srv.Close)
	f.Fuzz(func(t *testing.T, body string) {
		req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		w := httptest.NewRecorder()
		srv.serveHTTP(w, req)
		if w.Code != http.StatusOK && w.Code < 400 {
			t.Fatalf("status %d", w.Code)
		}
		dec := xml.NewDecoder(w.Body)
		for {
			_, err := dec.Token()
			if err != nil {
				if !errors.Is(err, io.EOF) {
					t.Fatalf("answer is not XML: %v", err)
				}
				break
			}
		}
		srv.Instances()
	})
}

func TestDryRun(t *testing.T) {
	t.Parallel()
	f := setup(t)
	_, err := f.ec2.DescribeInstances(context.Background(), &ec2.DescribeInstancesInput{DryRun: aws.Bool(true)})
	wantCode(t, err, "DryRunOperation")
	if got := httpStatus(err); got != http.StatusPreconditionFailed {
		t.Errorf("HTTP %d, want 412", got)
	}
}
