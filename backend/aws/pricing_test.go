package aws

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/pricing"

	"github.com/dstackai/dstack/internal/ec2fake"
)

// fixtureDocs are the products of testdata/pricelist.json, each as the
// JSON string GetProducts returns it: Linux shared-tenancy prices and the
// products the refresh must skip (Windows, dedicated, SQL, reservations,
// hosts, zero prices).
func fixtureDocs(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("testdata/pricelist.json")
	if err != nil {
		t.Fatal(err)
	}
	var raw []json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	out := make([]string, len(raw))
	for i, r := range raw {
		out[i] = string(r)
	}
	return out
}

func TestParsePriceList(t *testing.T) {
	t.Parallel()
	got, err := ParsePriceList(fixtureDocs(t))
	if err != nil {
		t.Fatal(err)
	}
	want := []ListedPrice{
		{"us-east-1", "m5.large", 0.096},
		{"us-east-1", "g5.xlarge", 1.006},
		{"us-east-1", "p4d.24xlarge", 32.7726},
		{"us-east-1", "c5.large", 0.085},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ParsePriceList = %v, want %v", got, want)
	}
	if _, err := ParsePriceList([]string{"{not json"}); err == nil {
		t.Error("a broken document parsed")
	}
}

// pagedPricing answers GetProducts with docs, two a page.
type pagedPricing struct {
	docs  []string
	calls int
}

func (p *pagedPricing) GetProducts(_ context.Context, in *pricing.GetProductsInput, _ ...func(*pricing.Options)) (*pricing.GetProductsOutput, error) {
	p.calls++
	start := 0
	if in.NextToken != nil {
		start = int((*in.NextToken)[0] - '0')
	}
	end := min(start+2, len(p.docs))
	out := &pricing.GetProductsOutput{PriceList: p.docs[start:end]}
	if end < len(p.docs) {
		out.NextToken = awssdk.String(string(rune('0' + end)))
	}
	return out, nil
}

func TestRefreshPrices(t *testing.T) {
	t.Parallel()
	api := &pagedPricing{docs: fixtureDocs(t)}
	table, err := RefreshPrices(context.Background(), api, []string{"us-east-1"}, nil, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	if api.calls != 6 || len(table["us-east-1"]) != 4 || table["us-east-1"]["g5.xlarge"] != 1.006 {
		t.Errorf("%d calls gave %v", api.calls, table)
	}
	path := filepath.Join(t.TempDir(), "prices.json")
	if err := os.WriteFile(path, []byte(`{"eu-west-1": {"m5.large": 0.107}, "us-east-1": {"old.type": 1}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WritePriceTable(path, table, true); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	var back PriceTable
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back["eu-west-1"]["m5.large"] != 0.107 || back["us-east-1"]["old.type"] != 0 || back["us-east-1"]["m5.large"] != 0.096 {
		t.Errorf("merged table %v: want eu-west-1 kept, us-east-1 replaced", back)
	}
	if _, err := RefreshPrices(context.Background(), &pagedPricing{}, []string{"us-east-1"}, nil, nil); err == nil {
		t.Error("an empty price list was accepted")
	}
}

// TestShippedPrices checks the embedded table covers the types of the
// fake's catalogue (EC2's common current types) in every region it has.
func TestShippedPrices(t *testing.T) {
	t.Parallel()
	for _, region := range PriceRegions {
		for _, it := range ec2fake.DefaultCatalog() {
			if p := onDemandPrices[region][it.Name]; p <= 0 {
				t.Errorf("no list price of %s in %s", it.Name, region)
			}
		}
	}
	if !reflect.DeepEqual(PriceTableRegions(), sortedCopy(PriceRegions)) {
		t.Errorf("the shipped table has regions %v, want %v", PriceTableRegions(), PriceRegions)
	}
}

func sortedCopy(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}
