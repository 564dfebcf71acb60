package servercmd

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/dstackai/dstack/internal/bytesize"
)

// retentionValue is --runner-retention: a duration where 0 means forever
// (server.Config takes a negative value for that).
type retentionValue struct{ d *time.Duration }

func (v retentionValue) String() string {
	if v.d == nil || *v.d < 0 {
		return "0s"
	}
	return v.d.String()
}

func (v retentionValue) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return fmt.Errorf("%q is not a duration such as 24h or 30m (0 keeps offline runners forever)", s)
	}
	if d == 0 {
		d = -1
	}
	*v.d = d
	return nil
}

func (retentionValue) Type() string { return "duration" }

// quotaValue is --storage-quota: a size as bytesize reads it, where 0 is no
// quota.
type quotaValue struct{ n *int64 }

func (v quotaValue) String() string {
	if v.n == nil || *v.n <= 0 {
		return "0"
	}
	return bytesize.Exact(*v.n)
}

func (v quotaValue) Set(s string) error {
	n, err := bytesize.Parse(s)
	if err != nil {
		return fmt.Errorf("%w (0 for no quota)", err)
	}
	*v.n = n
	return nil
}

func (quotaValue) Type() string { return "SIZE" }

// daysValue is --retention: a duration such as 30d, 12h or 90m (days are
// 24 hours), where 0 or "" keeps runs forever.
type daysValue struct{ d *time.Duration }

func (v daysValue) String() string {
	if v.d == nil || *v.d <= 0 {
		return "0"
	}
	if *v.d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", *v.d/(24*time.Hour))
	}
	return v.d.String()
}

func (v daysValue) Set(s string) error {
	d, err := parseDays(s)
	if err != nil {
		return err
	}
	*v.d = d
	return nil
}

func (daysValue) Type() string { return "DURATION" }

// parseDays reads a duration that may count days: "30d", "1d12h", "36h",
// "0"; "" is 0.
func parseDays(s string) (time.Duration, error) {
	in := strings.TrimSpace(s)
	bad := fmt.Errorf("%q is not a duration such as 30d, 12h or 90m (0 keeps runs forever)", s)
	if in == "" || in == "0" {
		return 0, nil
	}
	var days int64
	if i := strings.IndexByte(in, 'd'); i >= 0 {
		n, err := strconv.ParseInt(in[:i], 10, 64)
		if err != nil || n < 0 || n > 100*365 {
			return 0, bad
		}
		days, in = n, in[i+1:]
	}
	var rest time.Duration
	if in != "" {
		d, err := time.ParseDuration(in)
		if err != nil || d < 0 {
			return 0, bad
		}
		rest = d
	}
	return time.Duration(days)*24*time.Hour + rest, nil
}
