package dtma_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/agentopia/dtma"
)

func TestParseMemory(t *testing.T) {
	for in, want := range map[string]int64{
		"512m": 512 << 20, "2g": 2 << 30, "2G": 2 << 30, "1048576": 1 << 20, "64k": 64 << 10,
		"1t": 1 << 40, "512MB": 512 << 20, "512MiB": 512 << 20, "100b": 100, " 1g ": 1 << 30, "0": 0,
	} {
		if got, err := dtma.ParseMemory(in); err != nil || got != want {
			t.Errorf("ParseMemory(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "lots", "-1m", "1.5g", "1x", "m", "99999999999999999999", "9223372036854775807k"} {
		if _, err := dtma.ParseMemory(in); err == nil {
			t.Errorf("ParseMemory(%q) accepted", in)
		}
	}
	if s := dtma.FormatMemory(512 << 20); s != "512m" {
		t.Errorf("FormatMemory = %q", s)
	}
}

func TestParseCPUs(t *testing.T) {
	for in, want := range map[string]int64{"1": 1000, "0.5": 500, ".25": 250, "1.125": 1125, "2.": 2000, "0": 0} {
		if got, err := dtma.ParseCPUs(in); err != nil || got != want {
			t.Errorf("ParseCPUs(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", ".", "-1", "+1", "0.0001", "1e3", "one", "1.-5", "99999999"} {
		if _, err := dtma.ParseCPUs(in); err == nil {
			t.Errorf("ParseCPUs(%q) accepted", in)
		}
	}
}

func TestValidateLimitsNamesTheField(t *testing.T) {
	for _, tc := range []struct {
		l     dtma.Limits
		field string
	}{
		{dtma.Limits{}, ""},
		{dtma.Limits{Memory: 512 << 20, PIDs: 256, MilliCPUs: 1000}, ""},
		{dtma.Limits{Memory: 1 << 20}, "limits.memory"},
		{dtma.Limits{Memory: -1}, "limits.memory"},
		{dtma.Limits{Memory: 2 << 40}, "limits.memory"},
		{dtma.Limits{PIDs: 1}, "limits.pids"},
		{dtma.Limits{PIDs: -5}, "limits.pids"},
		{dtma.Limits{PIDs: 1 << 30}, "limits.pids"},
		{dtma.Limits{MilliCPUs: 1}, "limits.cpus"},
		{dtma.Limits{MilliCPUs: 1 << 40}, "limits.cpus"},
	} {
		err := dtma.ValidateLimits(tc.l)
		if dtma.ErrorField(err) != tc.field || (tc.field != "" && dtma.ErrorCode(err) != dtma.EINVALID) {
			t.Errorf("ValidateLimits(%+v) = %v; want field %q", tc.l, err, tc.field)
		}
	}
	req := dtma.DeployRequest{Name: "x", Spec: dtma.Spec{Image: "img:1", Limits: dtma.Limits{PIDs: 2}}}
	req.Normalize()
	if err := req.Validate(); dtma.ErrorField(err) != "limits.pids" {
		t.Errorf("DeployRequest.Validate with pids 2 = %v, want limits.pids", err)
	}
}

// A spec without limits has the canonical form it had before limits
// existed (so existing rows and containers still match their hash); one
// with limits hashes differently.
func TestSpecLimitsCanonicalForm(t *testing.T) {
	s := dtma.Spec{Image: "img:1", Env: map[string]string{"A": "1"}}
	b, _ := json.Marshal(s)
	if strings.Contains(string(b), "limits") {
		t.Errorf("spec without limits marshals with them: %s", b)
	}
	l := s
	l.Limits = dtma.Limits{Memory: 256 << 20}
	if l.Hash() == s.Hash() {
		t.Error("limits do not change the spec hash")
	}
	if c := (&dtma.Instance{Spec: l}).Clone(); c.Spec.Limits != l.Limits {
		t.Errorf("Clone drops limits: %+v", c.Spec.Limits)
	}
	var back dtma.Spec
	b, _ = json.Marshal(l)
	if err := json.Unmarshal(b, &back); err != nil || back.Hash() != l.Hash() {
		t.Errorf("limits do not survive a registry round trip: %s", b)
	}
}
