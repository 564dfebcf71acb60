package cli

import (
	"context"
	"fmt"
	"math"

	"github.com/spf13/cobra"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/client"
)

// The cost of on-demand instances (docs/cost.md): `dstack usage` and
// `dstack on-demand budget`; `dstack ps` shows each run's.

// money writes an amount: "$1.23" in US dollars, "1.23 EUR" otherwise;
// "<$0.01" for a cost under a cent that is not nothing.
func money(v float64, currency string) string {
	s := fmt.Sprintf("%.2f", v)
	if v > 0 && v < 0.005 {
		s = "<0.01"
	}
	if currency == "USD" {
		if s[0] == '<' {
			return "<$" + s[1:]
		}
		return "$" + s
	}
	return s + " " + currency
}

// formatCost is the COST column: "-" for nothing on on-demand instances.
func formatCost(c *api.Cost) string {
	if c == nil {
		return "-"
	}
	return money(c.Cost, c.Currency)
}

// hours writes instance-hours: "2.50".
func hours(h float64) string { return fmt.Sprintf("%.2f", math.Max(h, 0)) }

func (e *Env) usageCmd() *cobra.Command {
	var (
		since, by string
		asJSON    bool
	)
	cmd := &cobra.Command{
		Use:   "usage [--since 30d] [--by user|limit|instance-type|day] [--json]",
		Short: "Show what on-demand instances cost",
		Long: `Show the instance-hours and cost of on-demand instances over a period (30
days back by default), grouped by user, limit, instance type or day (UTC).
IDLE COST is what instances cost while no job held them, before their idle
timeout ended them: it is charged to the user whose job ran last on the
instance (or that it was launched for).

Members see their own usage; admins see everyone's. Figures are list
prices times the time the server recorded: an estimate; the cloud's bill
is the truth (docs/cost.md).`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch by {
			case api.UsageByUser, api.UsageByLimit, api.UsageByInstanceType, api.UsageByDay:
			default:
				return usagef("--by %q: give user, limit, instance-type or day", by)
			}
			if _, err := api.ParsePeriod(since); err != nil {
				return usagef("--since: %v", err)
			}
			return e.usage(cmd.Context(), client.UsageQuery{Since: since, By: by}, asJSON)
		},
	}
	cmd.Flags().StringVar(&since, "since", "30d", "how far back: days (30d) or hours (12h)")
	cmd.Flags().StringVar(&by, "by", api.UsageByUser, "group by user, limit, instance-type or day")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}

func (e *Env) usage(ctx context.Context, q client.UsageQuery, asJSON bool) error {
	c, err := e.client()
	if err != nil {
		return err
	}
	rep, err := c.Usage(ctx, q)
	if err != nil {
		return c.explain(err)
	}
	if asJSON {
		return writeJSON(e.Stdout, rep)
	}
	if len(rep.Rows) == 0 {
		fmt.Fprintf(e.Stderr, "No on-demand instance ran since %s.\n", rep.From.Local().Format("2006-01-02 15:04"))
		return nil
	}
	head := map[string]string{api.UsageByUser: "user", api.UsageByLimit: "limit",
		api.UsageByInstanceType: "instance type", api.UsageByDay: "day"}[rep.By]
	t := newTable(e.Stdout, head, "instance hours", "idle hours", "cost", "idle cost")
	for _, r := range append(rep.Rows, rep.Total) {
		key := r.Key
		if key == "" {
			key = "(no job)"
		}
		if key == "total" && r == rep.Total {
			key = "TOTAL"
		}
		t.row(key, hours(r.InstanceHours), hours(r.IdleHours), money(r.Cost, rep.Currency), money(r.IdleCost, rep.Currency))
	}
	if err := t.flush(); err != nil {
		return err
	}
	who := "your usage"
	if rep.All {
		who = "every user's usage"
	}
	fmt.Fprintf(e.Stderr, "Since %s, %s; list prices, the cloud's bill is the truth.\n", rep.From.Local().Format("2006-01-02 15:04"), who)
	return nil
}

func (e *Env) budgetCmd() *cobra.Command {
	var (
		monthly string
		asJSON  bool
	)
	cmd := &cobra.Command{
		Use:   "budget [--monthly AMOUNT] [--json]",
		Short: "Show or set the monthly budget of on-demand runners",
		Long: `Show the monthly budget of on-demand runners and what this month cost so far
(calendar months in UTC), or set it with --monthly (admins; 0 removes it).

When the month's cost reaches the budget, no new instance is launched:
pending jobs that need one say so in ` + "`dstack ps`" + `, and so does
` + "`dstack on-demand status`" + `. Running instances are left alone and
finish their jobs.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("monthly") {
				return e.budget(cmd.Context(), nil, asJSON)
			}
			v, err := api.ParseMonthly(monthly)
			if err != nil {
				return usagef("--monthly: %v", err)
			}
			return e.budget(cmd.Context(), &v, asJSON)
		},
	}
	cmd.Flags().StringVar(&monthly, "monthly", "", "the budget per calendar month, in USD (0 removes it)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the budget as JSON")
	return cmd
}

func (e *Env) budget(ctx context.Context, monthly *float64, asJSON bool) error {
	c, err := e.client()
	if err != nil {
		return err
	}
	var b *api.Budget
	if monthly != nil {
		b, err = c.BudgetSet(ctx, *monthly)
	} else {
		b, err = c.Budget(ctx)
	}
	if err != nil {
		return c.explain(err)
	}
	if asJSON {
		return writeJSON(e.Stdout, b)
	}
	spent := fmt.Sprintf("%s spent since %s", money(b.MonthCost, b.Currency), b.MonthStart.Format("Jan 2"))
	switch {
	case b.Monthly == 0 && monthly != nil:
		fmt.Fprintln(e.Stdout, "Monthly budget removed.")
	case b.Monthly == 0:
		fmt.Fprintln(e.Stdout, "No monthly budget is set (`dstack on-demand budget --monthly 500` sets one).")
	default:
		fmt.Fprintf(e.Stdout, "Monthly budget: %s, %s.\n", money(b.Monthly, b.Currency), spent)
		if b.Reached {
			fmt.Fprintf(e.Stdout, "New launches are stopped: %s\n", b.Reason)
		}
	}
	return nil
}
