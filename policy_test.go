package dtma_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/agentopia/dtma"
)

func TestMatchImagePattern(t *testing.T) {
	for _, tc := range []struct {
		pattern, image string
		want           bool
	}{
		{"ghcr.io/org/*", "ghcr.io/org/tool:1", true},
		{"ghcr.io/org/*", "ghcr.io/org/team/tool@sha256:abc", true},
		{"ghcr.io/org/*", "ghcr.io/other/tool:1", false},
		{"ghcr.io/org/*", "evil.io/ghcr.io/org/tool", false},
		{"*/mcp-*:2", "ghcr.io/x/mcp-weather:2", true},
		{"*/mcp-*:2", "ghcr.io/x/mcp-weather:3", false},
		{"node:20", "node:20", true},
		{"node:20", "node:20-alpine", false},
		{"*", "anything", true},
	} {
		if got := dtma.MatchImagePattern(tc.pattern, tc.image); got != tc.want {
			t.Errorf("MatchImagePattern(%q, %q) = %v, want %v", tc.pattern, tc.image, got, tc.want)
		}
	}
}

func TestParsePolicy(t *testing.T) {
	p, err := dtma.ParsePolicy([]byte(`{"images": [
		{"pattern": "ghcr.io/org/*", "cap_add": ["net_bind_service", "CAP_KILL"], "memory": "2g", "pids": 1024, "cpus": 2},
		{"pattern": "*", "memory": 1073741824, "cpus": "0.5"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	r := p.Match("ghcr.io/org/tool:1")
	if r == nil || !slices.Equal(r.CapAdd, []string{"NET_BIND_SERVICE", "KILL"}) || r.Limits != (dtma.Limits{Memory: 2 << 30, PIDs: 1024, MilliCPUs: 2000}) {
		t.Errorf("first rule = %+v", r)
	}
	if r := p.Match("docker.io/library/node:20"); r == nil || r.Pattern != "*" || r.Limits != (dtma.Limits{Memory: 1 << 30, MilliCPUs: 500}) {
		t.Errorf("catch-all rule = %+v", r)
	}
	var none *dtma.Policy
	if none.Match("x") != nil {
		t.Error("nil policy matched")
	}
	for body, want := range map[string]string{
		`{"images": [{"pattern": "x", "privileged": true}]}`:               "privileged",
		`{"images": [{"pattern": "x", "network_mode": "host"}]}`:           "network_mode",
		`{"images": [{"pattern": "x", "binds": ["/:/host"]}]}`:             "binds",
		`{"images": [{"pattern": "x", "cap_add": ["SYS_ADMIN"]}]}`:         "images[0].cap_add",
		`{"images": [{"pattern": "x", "cap_add": ["ALL"]}]}`:               "images[0].cap_add",
		`{"images": [{"pattern": ""}]}`:                                    "images[0].pattern",
		`{"images": [{"pattern": "x"}, {"pattern": "y", "memory": "1k"}]}`: "images[1].memory",
		`{"images": [{"pattern": "x", "pids": -1}]}`:                       "images[0].pids",
		`{"images": [{"pattern": "x", "cpus": "lots"}]}`:                   "images[0].cpus",
		`{"images": []} {}`: "exactly one",
		`not json`:          "policy",
	} {
		if _, err := dtma.ParsePolicy([]byte(body)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParsePolicy(%s) = %v; want an error naming %q", body, err, want)
		}
	}
}

func TestDefaultCapabilitiesHaveNoNetRaw(t *testing.T) {
	caps := dtma.DefaultCapabilities()
	for _, c := range []string{"NET_RAW", "NET_BIND_SERVICE", "SYS_ADMIN", "MKNOD", "SYS_CHROOT", "SETPCAP", "SETFCAP"} {
		if slices.Contains(caps, c) {
			t.Errorf("default capabilities %v keep %s", caps, c)
		}
	}
	caps[0] = "changed"
	if dtma.DefaultCapabilities()[0] == "changed" {
		t.Error("DefaultCapabilities returns shared state")
	}
}
