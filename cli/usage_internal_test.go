package cli

import (
	"testing"

	"github.com/dstackai/dstack/api"
)

func TestFormatCost(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		cost *api.Cost
		want string
	}{
		{nil, "-"},
		{&api.Cost{Cost: 0, Currency: "USD"}, "$0.00"},
		{&api.Cost{Cost: 0.0001, Currency: "USD"}, "<$0.01"},
		{&api.Cost{Cost: 1.234, Currency: "USD"}, "$1.23"},
		{&api.Cost{Cost: 12.5, Currency: "EUR"}, "12.50 EUR"},
		{&api.Cost{Cost: 0.001, Currency: "EUR"}, "<0.01 EUR"},
	} {
		if got := formatCost(c.cost); got != c.want {
			t.Errorf("formatCost(%+v) = %q, want %q", c.cost, got, c.want)
		}
	}
}
