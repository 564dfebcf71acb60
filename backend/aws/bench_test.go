package aws

import (
	"context"
	"fmt"
	"testing"

	"github.com/dstackai/dstack/backend"
	"github.com/dstackai/dstack/internal/ec2fake"
)

// The backend's own cost per call, through the real SDK (signing, the
// query protocol, XML) against the in-process EC2 server, so that what is
// measured is the backend and the SDK, not the network or AWS.
//
//	go test -run '^$' -bench . -benchtime 200x ./backend/aws/

func benchBackend(b *testing.B) (*Backend, *ec2fake.Server) {
	b.Helper()
	fake := ec2fake.New(ec2fake.Options{Credentials: map[string]string{testKeyID: testSecret}})
	b.Cleanup(fake.Close)
	be, err := New(Config{AccessKeyID: testKeyID, SecretAccessKey: testSecret, Region: "eu-west-1",
		Endpoint: fake.URL(), LaunchRate: 1e6, LaunchBurst: 1e6})
	if err != nil {
		b.Fatal(err)
	}
	return be, fake
}

// BenchmarkOffersCold: a region's whole catalogue with prices, uncached
// (DescribeInstanceTypeOfferings, DescribeInstanceTypes, DescribeSpotPriceHistory).
func BenchmarkOffersCold(b *testing.B) {
	ctx := context.Background()
	for b.Loop() {
		b.StopTimer()
		be, _ := benchBackend(b)
		b.StartTimer()
		if _, err := be.Offers(ctx, "eu-west-1"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLaunch: one RunInstances of n instances and, for n > 1, the
// per-instance tags (record and join token), with the image and security
// group already known.
func BenchmarkLaunch(b *testing.B) {
	for _, n := range []int{1, 5} {
		b.Run(fmt.Sprint("instances=", n), func(b *testing.B) {
			ctx := context.Background()
			be, _ := benchBackend(b)
			offer := backend.Offer{Backend: Name, Region: "eu-west-1", InstanceType: "m5.large"}
			launch := func(i int) []string {
				specs := make([]backend.InstanceSpec, n)
				for j := range specs {
					specs[j] = backend.InstanceSpec{RecordID: fmt.Sprintf("r%d-%d", i, j), JoinToken: fmt.Sprintf("jt-%d-%d", i, j)}
				}
				got, err := be.Launch(ctx, backend.LaunchRequest{Offer: offer, IdempotencyKey: fmt.Sprintf("bench-%d-%d", n, i),
					ServerID: testServer, LimitID: "l1", ServerURL: testURL, Instances: specs})
				if err != nil {
					b.Fatal(err)
				}
				ids := make([]string, len(got))
				for j, in := range got {
					ids[j] = in.CloudID
				}
				return ids
			}
			terminate := func(ids []string) {
				if err := be.Terminate(ctx, ids); err != nil {
					b.Fatal(err)
				}
			}
			terminate(launch(-1)) // the image and the security group are known from here on
			i := 0
			for b.Loop() {
				ids := launch(i)
				i++
				b.StopTimer()
				terminate(ids) // the fake holds 256 live instances at most
				b.StartTimer()
			}
		})
	}
}
