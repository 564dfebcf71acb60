package aws

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"strconv"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/pricing"
	ptypes "github.com/aws/aws-sdk-go-v2/service/pricing/types"
)

// PricingAPI is the part of the AWS Price List Query API RefreshPrices
// calls; *pricing.Client satisfies it. The API answers in us-east-1 (and
// a few other regions) for every region's prices.
type PricingAPI interface {
	GetProducts(context.Context, *pricing.GetProductsInput, ...func(*pricing.Options)) (*pricing.GetProductsOutput, error)
}

var _ PricingAPI = (*pricing.Client)(nil)

// PriceRegions are the regions the shipped price table covers by default.
var PriceRegions = []string{"us-east-1", "us-east-2", "us-west-2", "eu-west-1", "eu-central-1", "ap-southeast-1"}

// RefreshPrices asks the Price List API for the on-demand hourly price of
// every instance type in each region (Linux, shared tenancy, no
// pre-installed software, capacity status Used), or only of types when it
// is not empty. logf, when set, is told of each region's count.
func RefreshPrices(ctx context.Context, api PricingAPI, regions, types []string, logf func(format string, args ...any)) (PriceTable, error) {
	out := PriceTable{}
	for _, region := range regions {
		filters := []ptypes.Filter{
			termMatch("regionCode", region),
			termMatch("operatingSystem", "Linux"),
			termMatch("tenancy", "Shared"),
			termMatch("preInstalledSw", "NA"),
			termMatch("capacitystatus", "Used"),
		}
		prices := map[string]float64{}
		queries := [][]ptypes.Filter{filters}
		if len(types) > 0 {
			queries = nil
			for _, t := range types {
				queries = append(queries, append(slices.Clone(filters), termMatch("instanceType", t)))
			}
		}
		for _, f := range queries {
			in := &pricing.GetProductsInput{ServiceCode: awssdk.String("AmazonEC2"), Filters: f,
				FormatVersion: awssdk.String("aws_v1"), MaxResults: awssdk.Int32(100)}
			for pages := pricing.NewGetProductsPaginator(api, in); pages.HasMorePages(); {
				res, err := pages.NextPage(ctx)
				if err != nil {
					return nil, fmt.Errorf("price list of %s: %w", region, err)
				}
				page, err := ParsePriceList(res.PriceList)
				if err != nil {
					return nil, fmt.Errorf("price list of %s: %w", region, err)
				}
				for _, p := range page {
					if p.Region != region {
						continue
					}
					if old, ok := prices[p.InstanceType]; !ok || p.USDPerHour < old {
						prices[p.InstanceType] = p.USDPerHour
					}
				}
			}
		}
		if len(prices) == 0 {
			return nil, fmt.Errorf("price list of %s: no Linux on-demand prices (is the region right?)", region)
		}
		out[region] = prices
		if logf != nil {
			logf("%s: %d instance types", region, len(prices))
		}
	}
	return out, nil
}

func termMatch(field, value string) ptypes.Filter {
	return ptypes.Filter{Type: ptypes.FilterTypeTermMatch, Field: awssdk.String(field), Value: awssdk.String(value)}
}

// ListedPrice is one product of the price list: an instance type's
// on-demand price in a region.
type ListedPrice struct {
	Region       string
	InstanceType string
	USDPerHour   float64
}

// priceDoc is the part of a price list product (format aws_v1) read.
type priceDoc struct {
	Product struct {
		Attributes struct {
			InstanceType    string `json:"instanceType"`
			RegionCode      string `json:"regionCode"`
			OperatingSystem string `json:"operatingSystem"`
			Tenancy         string `json:"tenancy"`
			PreInstalledSw  string `json:"preInstalledSw"`
			CapacityStatus  string `json:"capacitystatus"`
		} `json:"attributes"`
	} `json:"product"`
	Terms struct {
		OnDemand map[string]struct {
			PriceDimensions map[string]struct {
				Unit         string            `json:"unit"`
				PricePerUnit map[string]string `json:"pricePerUnit"`
			} `json:"priceDimensions"`
		} `json:"OnDemand"`
	} `json:"terms"`
}

// ParsePriceList reads the products of a GetProducts answer, keeping the
// Linux, shared-tenancy, no-software, used-capacity instance prices by the
// hour in USD. Products of other kinds (hosts, reservations, software) and
// zero prices are skipped; a document that is not JSON is an error.
func ParsePriceList(docs []string) ([]ListedPrice, error) {
	var out []ListedPrice
	for i, d := range docs {
		var p priceDoc
		if err := json.Unmarshal([]byte(d), &p); err != nil {
			return nil, fmt.Errorf("product %d: %w", i, err)
		}
		a := p.Product.Attributes
		if a.InstanceType == "" || a.RegionCode == "" || a.OperatingSystem != "Linux" || a.Tenancy != "Shared" ||
			(a.PreInstalledSw != "" && a.PreInstalledSw != "NA") || (a.CapacityStatus != "" && a.CapacityStatus != "Used") {
			continue
		}
		price := -1.0
		for _, term := range p.Terms.OnDemand {
			for _, dim := range term.PriceDimensions {
				if dim.Unit != "Hrs" {
					continue
				}
				v, err := strconv.ParseFloat(dim.PricePerUnit["USD"], 64)
				if err != nil {
					continue
				}
				if price < 0 || v < price {
					price = v
				}
			}
		}
		if price <= 0 {
			continue
		}
		out = append(out, ListedPrice{Region: a.RegionCode, InstanceType: a.InstanceType, USDPerHour: price})
	}
	return out, nil
}

// WritePriceTable writes t as prices.json is shipped (keys sorted, one
// entry a line), merged over the table already at path when merge is set,
// so a refresh of some regions keeps the others.
func WritePriceTable(path string, t PriceTable, merge bool) error {
	all := PriceTable{}
	if merge {
		old, err := os.ReadFile(path)
		switch {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			return err
		default:
			if err := json.Unmarshal(old, &all); err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
		}
	}
	for r, m := range t {
		all[r] = m
	}
	b, err := json.MarshalIndent(all, "", " ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644) //nolint:gosec // a source file of the repository, for everyone to read
}

// PriceTableRegions are the regions of the shipped table, sorted.
func PriceTableRegions() []string {
	var out []string
	for r := range onDemandPrices {
		out = append(out, r)
	}
	sort.Strings(out)
	return out
}
