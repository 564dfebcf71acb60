package servercmd

import (
	"fmt"
	"time"
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
