// Command dstack-aws-prices refreshes the on-demand price table the AWS
// backend ships (backend/aws/prices.json) from the AWS Price List API,
// with the credentials of the AWS SDK's default chain (environment,
// ~/.aws). Run from the repository root:
//
//	go run ./cmd/dstack-aws-prices [-o backend/aws/prices.json] [-regions us-east-1,eu-west-1] [-types m5.large,g5.xlarge]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/pricing"

	"github.com/dstackai/dstack/backend/aws"
)

func main() {
	out := flag.String("o", "backend/aws/prices.json", "the price table to rewrite")
	regions := flag.String("regions", strings.Join(aws.PriceTableRegions(), ","), "comma-separated regions to refresh; others in the table are kept")
	types := flag.String("types", "", "comma-separated instance types to refresh (default: all the region sells)")
	flag.Parse()
	ctx := context.Background()
	cfg, err := config.LoadDefaultConfig(ctx, config.WithRegion("us-east-1")) // the Price List API's region
	if err == nil {
		var t aws.PriceTable
		logf := func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }
		if t, err = aws.RefreshPrices(ctx, pricing.NewFromConfig(cfg), split(*regions), split(*types), logf); err == nil {
			if err = aws.WritePriceTable(*out, t, true); err == nil {
				return
			}
		}
	}
	fmt.Fprintln(os.Stderr, "dstack-aws-prices:", err)
	os.Exit(1)
}

func split(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
