package aws

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// PriceTable is on-demand list prices: region → instance type → US dollars
// an hour, Linux, shared tenancy, no pre-installed software.
type PriceTable map[string]map[string]float64

// pricesJSON is the price table shipped with the backend. Refresh it with
// cmd/dstack-aws-prices (see RefreshPrices), which rewrites prices.json.
//
//go:embed prices.json
var pricesJSON []byte

// onDemandPrices is pricesJSON, parsed once.
var onDemandPrices = func() PriceTable {
	var t PriceTable
	if err := json.Unmarshal(pricesJSON, &t); err != nil {
		panic(fmt.Sprintf("aws: embedded prices.json: %v", err))
	}
	return t
}()

// spotFraction is the share of the on-demand price a spot offer is given
// when EC2 has no spot price for it: spot prices are mostly 30–50% of
// on-demand, so the guess errs on the dear side.
const spotFraction = 0.5

// onDemandPrice is the type's list price in region from the shipped table,
// or, for a type the table lacks, an estimate from its CPUs, memory and
// GPUs (known is then false).
func onDemandPrice(region string, t typeInfo) (price float64, known bool) {
	if p, ok := onDemandPrices[region][t.Name]; ok && p > 0 {
		return p, true
	}
	return estimatePrice(t), false
}

// estimatePrice guesses an hourly on-demand price from a type's size, in
// line with general-purpose types in us-east-1 (m6i: $0.048 per vCPU with 4
// GiB) and GPU types (about $0.05 an hour per GiB of GPU memory).
func estimatePrice(t typeInfo) float64 {
	p := 0.036*float64(t.CPUs) + 0.003*float64(t.MemoryMiB)/1024
	for _, g := range t.GPUs {
		p += 0.05 * float64(g.MemoryMiB) / 1024
	}
	return math.Round(p*10000) / 10000
}

// spotPrice is the type's spot price, or a fraction of its on-demand one
// when EC2 gave none (known is then false).
func spotPrice(spot map[string]float64, name string, onDemand float64) (price float64, known bool) {
	if p, ok := spot[name]; ok && p > 0 {
		return p, true
	}
	return math.Round(onDemand*spotFraction*10000) / 10000, false
}

// spotPrices asks EC2 for the current spot price of the region's spot
// types (DescribeSpotPriceHistory from now, Linux/UNIX), the cheapest
// availability zone's for each. A failure is logged once and gives no
// prices: the offers fall back to a fraction of on-demand.
func (b *Backend) spotPrices(ctx context.Context, region string, infos []typeInfo) (map[string]float64, error) {
	var names []types.InstanceType
	for _, t := range infos {
		if t.Spot {
			names = append(names, types.InstanceType(t.Name))
		}
	}
	out := map[string]float64{}
	if len(names) == 0 {
		return out, nil
	}
	c := b.client(region)
	now := b.now()
	in := &ec2.DescribeSpotPriceHistoryInput{
		StartTime:           awssdk.Time(now),
		EndTime:             awssdk.Time(now),
		ProductDescriptions: []string{"Linux/UNIX"},
		InstanceTypes:       names,
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for pages := ec2.NewDescribeSpotPriceHistoryPaginator(c, in); pages.HasMorePages(); {
		res, err := pages.NextPage(ctx)
		if actionUnsupported(err) {
			b.noteUnsupported("DescribeSpotPriceHistory", fmt.Sprintf("pricing spot offers at %g of the on-demand price table", spotFraction))
			return out, nil
		}
		if err != nil {
			b.logOnce("spot:"+region+":"+errCode(err), "cannot get spot prices; spot offers are priced at a fraction of on-demand",
				"region", region, "fraction", spotFraction, "err", classify("offers", err))
			return out, err
		}
		for _, sp := range res.SpotPriceHistory {
			p, err := strconv.ParseFloat(strings.TrimSpace(awssdk.ToString(sp.SpotPrice)), 64)
			if err != nil || p <= 0 {
				continue
			}
			name := string(sp.InstanceType)
			if old, ok := out[name]; !ok || p < old {
				out[name] = p
			}
		}
	}
	return out, nil
}
