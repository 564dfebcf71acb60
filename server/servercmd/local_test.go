package servercmd

import (
	"slices"
	"testing"
	"time"
)

func TestGatewayHosts(t *testing.T) {
	t.Parallel()
	const gw = "172.17.0.1"
	for _, tt := range []struct {
		host, external, network string
		want                    []string
	}{
		{host: "127.0.0.1", network: "bridge", want: []string{gw}},
		{host: "localhost", network: "bridge", want: []string{gw}},
		{host: "::1", network: "bridge", want: []string{gw}},
		{host: "0.0.0.0", network: "bridge"},
		{host: gw, network: "bridge"},
		{host: "192.168.1.5", network: "bridge"},
		{host: "127.0.0.1", external: "https://dstack.example.com", network: "bridge"},
		{host: "127.0.0.1", network: "host"},
	} {
		if got := gatewayHosts(tt.host, gw, tt.external, tt.network); !slices.Equal(got, tt.want) {
			t.Errorf("gatewayHosts(%q, external %q, network %q) = %v, want %v", tt.host, tt.external, tt.network, got, tt.want)
		}
	}
}

func TestRetentionValue(t *testing.T) {
	t.Parallel()
	d := 24 * time.Hour
	v := retentionValue{&d}
	for _, tt := range []struct {
		in   string
		want time.Duration
	}{{"30m", 30 * time.Minute}, {"0", -1}, {"0s", -1}, {"48h", 48 * time.Hour}} {
		if err := v.Set(tt.in); err != nil || d != tt.want {
			t.Errorf("Set(%q): %v, %v; want %v", tt.in, d, err, tt.want)
		}
	}
	for _, bad := range []string{"-1h", "day", ""} {
		if err := v.Set(bad); err == nil {
			t.Errorf("Set(%q) accepted", bad)
		}
	}
}
