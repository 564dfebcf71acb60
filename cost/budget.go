package cost

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/store"
)

// SettingBudget names the setting that holds the monthly budget of
// on-demand runners, in api.Currency (a decimal number; unset: none).
const SettingBudget = "cost_budget_monthly"

// BudgetStore is what ReadBudget reads.
type BudgetStore interface {
	SettingGet(ctx context.Context, name string) (string, error)
	UsageList(ctx context.Context, p store.UsageListParams) (*store.Usage, error)
}

// ReadBudget reads the monthly budget and, when one is set, what
// on-demand instances cost since the start of now's month (UTC): the one
// function of this package that reads the store.
func ReadBudget(ctx context.Context, st BudgetStore, now time.Time) (*api.Budget, error) {
	b := &api.Budget{Currency: api.Currency, MonthStart: MonthStart(now)}
	v, err := st.SettingGet(ctx, SettingBudget)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return b, nil
	case err != nil:
		return nil, fmt.Errorf("read the budget: %w", err)
	}
	if b.Monthly, err = strconv.ParseFloat(v, 64); err != nil {
		return nil, fmt.Errorf("read the budget: setting %s = %q is not a number", SettingBudget, v)
	}
	if b.Monthly <= 0 {
		return b, nil
	}
	u, err := st.UsageList(ctx, store.UsageListParams{From: b.MonthStart, To: now})
	if err != nil {
		return nil, fmt.Errorf("read the month's cost: %w", err)
	}
	b.MonthCost = Total(Attribute(u, b.MonthStart, now, now))
	b.Reached = b.MonthCost >= b.Monthly
	b.Reason = BudgetReason(b)
	return b, nil
}

// BudgetReason says why nothing is launched while the budget is reached,
// for pending jobs and `dstack on-demand status`; "" when it is not.
func BudgetReason(b *api.Budget) string {
	if b == nil || !b.Reached {
		return ""
	}
	return fmt.Sprintf("the monthly on-demand budget of %s %s is spent (%s %s since %s): no instance is launched until next month; an admin can raise it with `dstack on-demand budget --monthly N`",
		amount(b.Monthly), b.Currency, amount(b.MonthCost), b.Currency, b.MonthStart.Format("Jan 2"))
}

// amount writes an amount of money with cents, or with the digits that
// show it when it is less than a cent.
func amount(v float64) string {
	if v == 0 || v >= 0.01 {
		return fmt.Sprintf("%.2f", v)
	}
	return fmt.Sprintf("%.6f", v)
}
