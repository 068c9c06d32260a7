package dtma_test

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/agentopia/dtma"
)

func TestRegistryPolicy(t *testing.T) {
	resolved := map[string][]netip.Addr{
		"inside.example":  {netip.MustParseAddr("10.1.2.3")},
		"rebind.example":  {netip.MustParseAddr("93.184.216.34"), netip.MustParseAddr("127.0.0.1")},
		"public.example":  {netip.MustParseAddr("93.184.216.34")},
		"meta.example":    {netip.MustParseAddr("169.254.169.254")},
		"ula.example":     {netip.MustParseAddr("fd00::1")},
		"mapped.example":  {netip.MustParseAddr("::ffff:192.168.1.1")},
		"private.example": {netip.MustParseAddr("172.16.0.1")},
	}
	var asked []string
	lookup := func(ctx context.Context, host string) ([]netip.Addr, error) {
		if _, ok := ctx.Deadline(); !ok {
			t.Errorf("lookup of %s without a deadline", host)
		}
		asked = append(asked, host)
		if a, ok := resolved[host]; ok {
			return a, nil
		}
		return nil, errors.New("no such host")
	}
	def := &dtma.RegistryPolicy{Lookup: lookup}
	for _, tt := range []struct {
		image string
		ok    bool
		why   string
	}{
		{"x:1", true, ""},
		{"ghcr.io/a/b:1", true, ""},
		{"public.example/a:1", true, ""},
		{"unresolvable.example/a:1", true, ""},
		{"8.8.8.8:5000/a", true, ""},
		{"127.0.0.1:5000/x:1", false, "loopback"},
		{"127.9.9.9/x", false, "loopback"},
		{"[::1]:5000/x", false, "loopback"},
		{"0.0.0.0:80/x", false, "unspecified"},
		{"10.0.0.1/x", false, "private"},
		{"192.168.0.10:443/x", false, "private"},
		{"100.64.1.1/x", false, "private"},
		{"169.254.169.254/x", false, "link-local"},
		{"[fe80::1]/x", false, "link-local"},
		{"[fd12::1]:5000/x", false, "private"},
		{"localhost:5000/x", false, "loopback"},
		{"LocalHost:5000/x", false, "loopback"},
		{"a.localhost/x", false, "loopback"},
		{"inside.example/x", false, "resolves to a private"},
		{"rebind.example/x", false, "resolves to a loopback"},
		{"meta.example/x", false, "link-local"},
		{"ula.example/x", false, "private"},
		{"mapped.example/x", false, "private"},
		{"private.example/x", false, "private"},
		{":5000/x", false, "registry host is missing"},
	} {
		err := def.CheckImage(context.Background(), tt.image)
		if tt.ok != (err == nil) {
			t.Errorf("CheckImage(%q) = %v, want ok=%v", tt.image, err, tt.ok)
			continue
		}
		if err != nil && (dtma.ErrorField(err) != "image" || dtma.ErrorCode(err) != dtma.EINVALID || !strings.Contains(err.Error(), tt.why)) {
			t.Errorf("CheckImage(%q) = %v, want invalid on image saying %q", tt.image, err, tt.why)
		}
	}
	for _, h := range asked {
		if h == "docker.io" {
			t.Errorf("the implicit default registry was resolved")
		}
	}

	allow, err := dtma.ParseRegistryPatterns(" 127.0.0.1:5000, *.corp.example,10.0.0.0/8 ,Inside.Example")
	if err != nil {
		t.Fatal(err)
	}
	deny, err := dtma.ParseRegistryPatterns("ghcr.io,10.9.0.0/16")
	if err != nil {
		t.Fatal(err)
	}
	p := &dtma.RegistryPolicy{Allow: allow, Deny: deny, Lookup: lookup}
	for _, tt := range []struct {
		image string
		ok    bool
	}{
		{"127.0.0.1:5000/x:1", true},
		{"127.0.0.1:5001/x:1", false}, // another port
		{"reg.corp.example/x", true},
		{"10.2.3.4/x", true},
		{"10.9.0.1/x", false}, // deny wins
		{"inside.example/x", true},
		{"ghcr.io/a/b", false},
		{"x:1", true},
	} {
		if err := p.CheckImage(context.Background(), tt.image); tt.ok != (err == nil) {
			t.Errorf("with allow/deny, CheckImage(%q) = %v, want ok=%v", tt.image, err, tt.ok)
		}
	}
	for _, bad := range []string{"a b", "10.0.0.0/99", "http://x", "*.", ":5000"} {
		if _, err := dtma.ParseRegistryPatterns(bad); err == nil {
			t.Errorf("ParseRegistryPatterns(%q) accepted", bad)
		}
	}
}
