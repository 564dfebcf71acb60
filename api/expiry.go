package api

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// MaxTokenLifetime is the longest expiry a token may be given.
const MaxTokenLifetime = 10 * 365 * 24 * time.Hour

// ParseExpiry reads how long a token works: a whole number of days ("30d")
// or a Go duration ("12h", "90m", "1h30m"), more than zero and at most
// MaxTokenLifetime.
func ParseExpiry(s string) (time.Duration, error) {
	return parseDays("expiry", s, MaxTokenLifetime)
}

// parseDays reads a span of time a person gave as what: a whole number of
// days ("30d") or a Go duration ("12h", "90m", "1h30m"), more than zero and
// at most most.
func parseDays(what, s string, most time.Duration) (time.Duration, error) {
	s = strings.TrimSpace(s)
	bad := func(why string) error {
		return fmt.Errorf("%s %q %s: give days (30d) or hours and minutes (12h, 90m)", what, s, why)
	}
	tooLong := func() error {
		return bad(fmt.Sprintf("is too long: the most is %dd", most/(24*time.Hour)))
	}
	var d time.Duration
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseInt(days, 10, 64)
		if err != nil || n < 0 || days == "" || days[0] == '+' || days[0] == '-' {
			return 0, bad("is not a number of days")
		}
		if n > int64(most/(24*time.Hour)) {
			return 0, tooLong()
		}
		d = time.Duration(n) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, bad("is not a duration")
		}
	}
	switch {
	case d <= 0:
		return 0, bad("is not more than zero")
	case d > most:
		return 0, tooLong()
	}
	return d, nil
}
