package servertest

import (
	"net"
	"net/url"
	"strconv"
	"testing"
)

func portOf(t testing.TB, u string) int {
	t.Helper()
	pu, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	_, p, err := net.SplitHostPort(pu.Host)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(p)
	return n
}
