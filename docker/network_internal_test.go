package docker

import (
	"net/netip"
	"strings"
	"testing"
)

func TestSubnetBits(t *testing.T) {
	for size, want := range map[int]int{1: 30, 2: 29, 5: 29, 6: 28, 1000: 22, 1020: 22, 13: 28, 14: 27} {
		if got := SubnetBits(size); got != want {
			t.Errorf("SubnetBits(%d) = /%d, want /%d", size, got, want)
		}
		if usable := 1<<(32-SubnetBits(size)) - 3; usable < size {
			t.Errorf("SubnetBits(%d): /%d holds only %d containers", size, SubnetBits(size), usable)
		}
	}
}

func TestNthSubnet(t *testing.T) {
	pool := netip.MustParsePrefix("10.213.0.0/16")
	for i, want := range map[int]string{0: "10.213.0.0/22", 1: "10.213.4.0/22", 63: "10.213.252.0/22"} {
		if got := nthSubnet(pool, 22, i).String(); got != want {
			t.Errorf("nthSubnet(%d) = %s, want %s", i, got, want)
		}
	}
	if err := checkSubnets(netip.MustParsePrefix("10.0.0.0/24"), 1000); err == nil {
		t.Error("a /24 pool accepted for 1000-container shards")
	}
}

func TestNetworkName(t *testing.T) {
	a, b := NetworkName("Host A", 0), NetworkName("host-a", 0)
	if a == b {
		t.Errorf("host ids that slug alike share network name %s", a)
	}
	if !strings.HasPrefix(a, "dtma-host-a-") || !strings.HasSuffix(NetworkName("x", 12), "-12") {
		t.Errorf("names %s, %s", a, NetworkName("x", 12))
	}
	long := NetworkName(strings.Repeat("h", 128), 3)
	if len(long) > 64 {
		t.Errorf("name %s is %d long", long, len(long))
	}
}
