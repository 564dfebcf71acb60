package api

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Cost and usage of on-demand instances (docs/cost.md). Figures are list
// prices times time: an estimate, the cloud's bill is the truth.

// Currency is the currency of every price and cost the server reports.
const Currency = "USD"

// Ways to group usage (UsageReport.By, GET /usage?by=).
const (
	UsageByUser         = "user"
	UsageByLimit        = "limit"
	UsageByInstanceType = "instance-type"
	UsageByDay          = "day"
)

// Cost is what a run or a job cost on on-demand instances.
type Cost struct {
	// Cost is the price per hour of the instances the job held times the
	// time it held them (each attempt counts).
	Cost     float64 `json:"cost"`
	Currency string  `json:"currency"`
	// InstanceHours is how long the job held on-demand instances, in hours.
	InstanceHours float64 `json:"instance_hours"`
	// SelfHosted is true when some of the time was on self-hosted runners,
	// which cost nothing here (`-` in `dstack ps` when nothing else).
	SelfHosted bool `json:"self_hosted,omitempty"`
}

// Hold is a stretch of time one attempt of a job held an on-demand
// instance, with what it cost.
type Hold struct {
	JobID        string     `json:"job_id"`
	Workflow     string     `json:"workflow"`
	Attempt      int        `json:"attempt"`
	InstanceID   string     `json:"instance_id"`
	Backend      string     `json:"backend"`
	Region       string     `json:"region"`
	InstanceType string     `json:"instance_type"`
	PurchaseType string     `json:"purchase_type"`
	PricePerHour float64    `json:"price_per_hour"`
	From         time.Time  `json:"from"`
	To           *time.Time `json:"to,omitempty"` // absent while it holds it
	Hours        float64    `json:"hours"`
	Cost         float64    `json:"cost"`
}

// JobCost is one job's cost in RunCost.
type JobCost struct {
	JobID    string `json:"job_id"`
	Workflow string `json:"workflow"`
	Cost
	Holds []Hold `json:"holds"`
}

// RunCost answers GET /runs/{name}/cost.
type RunCost struct {
	Run string `json:"run"`
	Cost
	Jobs []JobCost `json:"jobs"`
}

// UsageRow is the usage of one group of a UsageReport.
type UsageRow struct {
	// Key is the group: a user's name ("" for time no job can be
	// charged to), a limit as "backend/region/type/purchase", an instance
	// type, or a day (YYYY-MM-DD, UTC).
	Key string `json:"key"`
	// InstanceHours is the hours instances were up; JobHours of it jobs
	// held them, IdleHours nothing did.
	InstanceHours float64 `json:"instance_hours"`
	JobHours      float64 `json:"job_hours"`
	IdleHours     float64 `json:"idle_hours"`
	// Cost is everything; IdleCost the part of it while idle.
	Cost     float64 `json:"cost"`
	IdleCost float64 `json:"idle_cost"`
}

// UsageReport answers GET /usage: instance time and cost over [From, To)
// grouped by By. A member's report holds only their own usage (Users says
// whose); an admin's holds everyone's.
type UsageReport struct {
	From     time.Time  `json:"from"`
	To       time.Time  `json:"to"`
	By       string     `json:"by"`
	Currency string     `json:"currency"`
	Rows     []UsageRow `json:"rows"`
	Total    UsageRow   `json:"total"` // Key "total"
	// All is true when the report covers every user (an admin's).
	All bool `json:"all"`
}

// DayCost is one day of a UsageDaily.
type DayCost struct {
	Day      string  `json:"day"` // YYYY-MM-DD, UTC
	Cost     float64 `json:"cost"`
	IdleCost float64 `json:"idle_cost"`
	// Parts is the day's cost by stack key (Keys); idle time is in its
	// user's or type's part.
	Parts map[string]float64 `json:"parts"`
}

// UsageDaily answers GET /usage/daily: cost per day stacked by user or
// instance type, every day of [From, To) present (zero when nothing ran).
type UsageDaily struct {
	From     time.Time `json:"from"`
	To       time.Time `json:"to"`
	Stack    string    `json:"stack"` // UsageByUser or UsageByInstanceType
	Currency string    `json:"currency"`
	Keys     []string  `json:"keys"` // the stack's keys, largest total first
	Days     []DayCost `json:"days"`
	All      bool      `json:"all"`
}

// Step is a value that holds from At until the next step's At (or To).
type Step struct {
	At    time.Time `json:"at"`
	Value int       `json:"value"`
}

// LimitSeries is one limit's instances over time against its maximum.
type LimitSeries struct {
	Key          string `json:"key"` // backend/region/type/purchase
	Backend      string `json:"backend"`
	Region       string `json:"region"`
	InstanceType string `json:"instance_type"`
	PurchaseType string `json:"purchase_type"`
	// Running is how many of its instances counted against it (launching,
	// running, terminating); Max its maximum (0 while it did not exist).
	// Both start at From with the value then, and change only where a
	// step says.
	Running []Step `json:"running"`
	Max     []Step `json:"max"`
}

// InstanceSeries answers GET /usage/instances.
type InstanceSeries struct {
	From   time.Time     `json:"from"`
	To     time.Time     `json:"to"`
	Limits []LimitSeries `json:"limits"`
}

// Budget answers GET and PUT /on-demand/budget.
type Budget struct {
	// Monthly is the budget per calendar month (UTC); 0: none.
	Monthly  float64 `json:"monthly"`
	Currency string  `json:"currency"`
	// MonthStart is the start of the current month; MonthCost what
	// on-demand instances cost since then, everyone's.
	MonthStart time.Time `json:"month_start"`
	MonthCost  float64   `json:"month_cost"`
	// Reached is true when MonthCost reached Monthly: no new instance is
	// launched until the month ends or the budget is raised.
	Reached bool `json:"reached"`
	// Reason says why nothing is launched, while Reached.
	Reason string `json:"reason,omitempty"`
}

// BudgetRequest is the body of PUT /on-demand/budget.
type BudgetRequest struct {
	Monthly float64 `json:"monthly"` // 0 removes the budget
}

// MaxUsagePeriod is the longest period a usage report covers.
const MaxUsagePeriod = 400 * 24 * time.Hour

// ParsePeriod reads how far back a usage report goes: whole days ("30d")
// or a Go duration ("12h", "90m"), more than zero and at most
// MaxUsagePeriod.
func ParsePeriod(s string) (time.Duration, error) {
	return parseDays("period", s, MaxUsagePeriod)
}

// ParseMonthly reads a monthly budget given by a person: a non-negative
// decimal number of Currency ("500", "99.50"); 0 removes the budget.
func ParseMonthly(s string) (float64, error) {
	v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || v < 0 || v != v || v > 1e12 {
		return 0, fmt.Errorf("budget %q: give an amount of %s such as 500 or 99.50 (0 removes the budget)", s, Currency)
	}
	return v, nil
}
