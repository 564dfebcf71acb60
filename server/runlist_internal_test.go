package server

import (
	"testing"
	"time"

	"github.com/dstackai/dstack/store"
)

// FuzzParseRunCursor: any ?after= is refused or read as a cursor that
// writes back to itself.
func FuzzParseRunCursor(f *testing.F) {
	f.Add(formatRunCursor(&store.RunCursor{SubmittedAt: time.UnixMicro(1700000000123456), ID: "0123456789abcdef"}))
	f.Add("")
	f.Add("bogus")
	f.Add("MTIz")
	f.Fuzz(func(t *testing.T, v string) {
		c, err := parseRunCursor(v)
		if err != nil {
			return
		}
		again, err := parseRunCursor(formatRunCursor(c))
		if err != nil || !again.SubmittedAt.Equal(c.SubmittedAt) || again.ID != c.ID {
			t.Fatalf("cursor %q read as %+v does not write back: %+v, %v", v, c, again, err)
		}
	})
}
