package aws

import (
	"strings"
	"testing"
	"time"

	"github.com/dstackai/dstack/backend"
	"github.com/dstackai/dstack/internal/ec2fake"
)

func offerMap(offers []backend.Offer) map[backend.OfferKey]backend.Offer {
	m := map[backend.OfferKey]backend.Offer{}
	for _, o := range offers {
		m[o.Key()] = o
	}
	return m
}

func key(region, itype string, spot bool) backend.OfferKey {
	return backend.OfferKey{Backend: Name, Region: region, InstanceType: itype, Spot: spot}
}

func TestOffers(t *testing.T) {
	t.Parallel()
	e := setup(t)
	offers, err := e.b.Offers(ctx(t), "us-east-1")
	if err != nil {
		t.Fatal(err)
	}
	m := offerMap(offers)
	// The default catalogue: 11 types, all but p3.2xlarge also as spot.
	if len(offers) != 21 {
		t.Errorf("got %d offers, want 21: %v", len(offers), offers)
	}
	if _, ok := m[key("us-east-1", "p3.2xlarge", true)]; ok {
		t.Error("p3.2xlarge is offered as spot; the region does not sell it so")
	}
	for _, tc := range []struct {
		itype     string
		spot      bool
		cpus      int
		nominal   int64
		gpus      int
		gpuName   string
		gpuMemMiB int64
		price     float64
	}{
		{itype: "t3.micro", cpus: 2, nominal: 1024, price: 0.0104},
		{itype: "t3.micro", spot: true, cpus: 2, nominal: 1024, price: 0.0032},
		{itype: "m5.large", cpus: 2, nominal: 8192, price: 0.096},
		{itype: "m5.large", spot: true, cpus: 2, nominal: 8192, price: 0.0385},
		{itype: "m6g.large", cpus: 2, nominal: 8192, price: 0.077},
		{itype: "g4dn.xlarge", cpus: 4, nominal: 16384, gpus: 1, gpuName: "Tesla T4", gpuMemMiB: 15360, price: 0.526},
		{itype: "g5.xlarge", spot: true, cpus: 4, nominal: 16384, gpus: 1, gpuName: "NVIDIA A10G", gpuMemMiB: 23028, price: 0.3869},
		{itype: "p4d.24xlarge", cpus: 96, nominal: 1179648, gpus: 8, gpuName: "NVIDIA A100-SXM4-40GB", gpuMemMiB: 40960, price: 32.7726},
		{itype: "p3.2xlarge", cpus: 8, nominal: 62464, gpus: 1, gpuName: "Tesla V100-SXM2-16GB", gpuMemMiB: 16160, price: 3.06},
	} {
		o, ok := m[key("us-east-1", tc.itype, tc.spot)]
		if !ok {
			t.Errorf("no offer %s spot=%v", tc.itype, tc.spot)
			continue
		}
		if o.CPUs != tc.cpus || o.MemoryMiB != usableMemoryMiB(tc.nominal) || o.PricePerHour != tc.price {
			t.Errorf("%s spot=%v: %d CPUs %d MiB $%v; want %d CPUs %d MiB $%v", tc.itype, tc.spot, o.CPUs, o.MemoryMiB, o.PricePerHour,
				tc.cpus, usableMemoryMiB(tc.nominal), tc.price)
		}
		if o.MemoryMiB >= tc.nominal || o.MemoryMiB < tc.nominal*85/100 {
			t.Errorf("%s: memory %d MiB is not a little under the nominal %d", tc.itype, o.MemoryMiB, tc.nominal)
		}
		if len(o.GPUs) != tc.gpus {
			t.Errorf("%s: %d GPUs, want %d", tc.itype, len(o.GPUs), tc.gpus)
		}
		for _, g := range o.GPUs {
			if g.Name != tc.gpuName || g.MemoryMiB != tc.gpuMemMiB {
				t.Errorf("%s: GPU %+v, want %s with %d MiB", tc.itype, g, tc.gpuName, tc.gpuMemMiB)
			}
		}
	}
	// A job asking for "A100", "a10g" or "T4" matches as the planner
	// matches: a case-insensitive substring of the runner's GPU name.
	for ask, itype := range map[string]string{"A100": "p4d.24xlarge", "a10g": "g5.xlarge", "T4": "g4dn.xlarge", "v100": "p3.2xlarge"} {
		g := m[key("us-east-1", itype, false)].GPUs
		if len(g) == 0 || !strings.Contains(strings.ToLower(g[0].Name), strings.ToLower(ask)) {
			t.Errorf("a job asking for GPU %q does not match %s's %v", ask, itype, g)
		}
	}

	// eu-west-1 has no p4d.24xlarge, and its own prices.
	eu, err := e.b.Offers(ctx(t), "eu-west-1")
	if err != nil {
		t.Fatal(err)
	}
	em := offerMap(eu)
	if _, ok := em[key("eu-west-1", "p4d.24xlarge", false)]; ok {
		t.Error("eu-west-1 offers p4d.24xlarge; the cloud does not sell it there")
	}
	if p := em[key("eu-west-1", "m5.large", false)].PricePerHour; p != 0.107 {
		t.Errorf("m5.large in eu-west-1 costs %v, want 0.107", p)
	}
}

func TestOffersCached(t *testing.T) {
	t.Parallel()
	e := setup(t)
	calls := func() int {
		n := 0
		for _, a := range []string{"DescribeRegions", "DescribeInstanceTypeOfferings", "DescribeInstanceTypes", "DescribeSpotPriceHistory"} {
			n += e.fake.Calls(a)
		}
		return n
	}
	if _, err := e.b.Offers(ctx(t), "us-east-1"); err != nil {
		t.Fatal(err)
	}
	first, types := calls(), e.fake.Calls("DescribeInstanceTypes")
	for range 2 {
		if _, err := e.b.Offers(ctx(t), "us-east-1"); err != nil {
			t.Fatal(err)
		}
	}
	if n := calls(); n != first {
		t.Errorf("cached Offers made %d calls", n-first)
	}
	e.clock.Advance(offerTTL + time.Second)
	if _, err := e.b.Offers(ctx(t), "us-east-1"); err != nil {
		t.Fatal(err)
	}
	if e.fake.Calls("DescribeInstanceTypes") == types {
		t.Error("Offers did not ask again after the cache expired")
	}
}

func TestOffersSpotPriceFallback(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.fake.Fail("DescribeSpotPriceHistory", "UnauthorizedOperation", "You are not authorized to perform this operation.", -1)
	for range 2 {
		offers, err := e.b.Offers(ctx(t), "us-east-1")
		if err != nil {
			t.Fatalf("Offers failed for want of spot prices: %v", err)
		}
		m := offerMap(offers)
		if p := m[key("us-east-1", "m5.large", true)].PricePerHour; p != 0.096*spotFraction {
			t.Errorf("m5.large spot without a spot price costs %v, want %v", p, 0.096*spotFraction)
		}
		if p := m[key("us-east-1", "m5.large", false)].PricePerHour; p != 0.096 {
			t.Errorf("m5.large on-demand costs %v, want 0.096", p)
		}
		e.clock.Advance(offerTTL + time.Second)
	}
	if n := strings.Count(e.logs.String(), "cannot get spot prices"); n != 1 {
		t.Errorf("the missing spot prices were logged %d times, want once:\n%s", n, e.logs)
	}
	if !strings.Contains(e.logs.String(), "UnauthorizedOperation") {
		t.Errorf("the log does not say why:\n%s", e.logs)
	}
}

func TestOffersUnknownPriceEstimated(t *testing.T) {
	t.Parallel()
	e := setup(t, setupOpts{fake: func(o *ec2fake.Options) {
		o.Regions = []string{"us-east-1", "eu-north-1"} // not in the price table
	}})
	offers, err := e.b.Offers(ctx(t), "eu-north-1")
	if err != nil {
		t.Fatal(err)
	}
	m := offerMap(offers)
	od := m[key("eu-north-1", "m5.xlarge", false)]
	if want := estimatePrice(typeInfo{CPUs: 4, MemoryMiB: 16384}); od.PricePerHour != want || want <= 0 {
		t.Errorf("m5.xlarge without a list price costs %v, want the estimate %v", od.PricePerHour, want)
	}
	if g := m[key("eu-north-1", "g5.xlarge", false)]; g.PricePerHour <= m[key("eu-north-1", "m5.xlarge", false)].PricePerHour {
		t.Errorf("the estimate of g5.xlarge (%v) is not above m5.xlarge's (%v): GPUs cost nothing?", g.PricePerHour, od.PricePerHour)
	}
	if sp := m[key("eu-north-1", "m5.xlarge", true)]; sp.PricePerHour != 0.0771 {
		t.Errorf("m5.xlarge spot costs %v, want EC2's 0.0771", sp.PricePerHour)
	}
	if n := strings.Count(e.logs.String(), "no on-demand list price"); n != 1 {
		t.Errorf("missing list prices logged %d times, want once:\n%s", n, e.logs)
	}
}

func TestOffersUnknownRegion(t *testing.T) {
	t.Parallel()
	e := setup(t)
	for region, code := range map[string]string{
		"xx-nowhere-9":   "InvalidRegion", // spelt as a region, but EC2 has none
		"Not a region":   "InvalidRegion",
		"ap-southeast-2": "OptInRequired", // EC2 has it; the account has not enabled it
	} {
		_, err := e.b.Offers(ctx(t), region)
		assertKind(t, err, backend.ErrInvalid, code)
	}
	for _, r := range e.b.usedRegions() {
		if r != "us-east-1" {
			t.Errorf("a refused region %s is counted as used: List would fail there", r)
		}
	}
}

func TestUsableMemory(t *testing.T) {
	t.Parallel()
	// MemTotal typical of EC2 instances (Ubuntu 22.04) by nominal size: the
	// offer must never promise more.
	for nominal, memTotal := range map[int64]int64{1024: 944, 4096: 3795, 8192: 7747, 16384: 15690, 65536: 63286} {
		if got := usableMemoryMiB(nominal); got > memTotal || got < memTotal*9/10 {
			t.Errorf("usableMemoryMiB(%d) = %d; the runner reports %d", nominal, got, memTotal)
		}
	}
}

func TestNvidiaSMIName(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		ec2  string
		mib  int64
		name string
		mem  int64
	}{
		{"T4", 16384, "Tesla T4", 15360},
		{"A100", 40960, "NVIDIA A100-SXM4-40GB", 40960},
		{"H100", 81920, "NVIDIA H100 80GB HBM3", 81559},
		{"X9", 10000, "NVIDIA X9", 9300}, // unknown: 93% of EC2's figure
		{"NVIDIA Z1", 1000, "NVIDIA Z1", 930},
	} {
		name, mem := nvidiaSMIName(tc.ec2, tc.mib)
		if name != tc.name || mem != tc.mem {
			t.Errorf("nvidiaSMIName(%q, %d) = %q, %d; want %q, %d", tc.ec2, tc.mib, name, mem, tc.name, tc.mem)
		}
	}
}
