package http

import (
	"encoding/json"
	"testing"

	"github.com/agentopia/dtma"
)

// The v1 limits object: memory as a size string or bytes, cpus as a
// number or a string, pids a whole number; an explicit zero or a bad value
// is a 400 naming the field (omitting it means the host's default).
func TestV1Limits(t *testing.T) {
	for body, want := range map[string]dtma.Limits{
		`{}`:                             {},
		`{"limits": null}`:               {},
		`{"limits": {}}`:                 {},
		`{"limits": {"memory": "512m"}}`: {Memory: 512 << 20},
		`{"limits": {"memory": 1073741824, "pids": 64}}`: {Memory: 1 << 30, PIDs: 64},
		`{"limits": {"cpus": 0.5}}`:                      {MilliCPUs: 500},
		`{"limits": {"cpus": "1.25", "memory": null}}`:   {MilliCPUs: 1250},
	} {
		var b DeployRequest
		if err := json.Unmarshal([]byte(body), &b); err != nil {
			t.Fatalf("%s: %v", body, err)
		}
		if got, err := b.limits(); err != nil || got != want {
			t.Errorf("%s: %+v, %v; want %+v", body, got, err, want)
		}
	}
	for body, field := range map[string]string{
		`{"limits": {"memory": "lots"}}`: "limits.memory",
		`{"limits": {"memory": 0}}`:      "limits.memory",
		`{"limits": {"memory": "0m"}}`:   "limits.memory",
		`{"limits": {"memory": -1}}`:     "limits.memory",
		`{"limits": {"memory": true}}`:   "limits.memory",
		`{"limits": {"pids": 0}}`:        "limits.pids",
		`{"limits": {"pids": -3}}`:       "limits.pids",
		`{"limits": {"cpus": 0}}`:        "limits.cpus",
		`{"limits": {"cpus": "x"}}`:      "limits.cpus",
		`{"limits": {"cpus": 1e-9}}`:     "limits.cpus",
	} {
		var b DeployRequest
		if err := json.Unmarshal([]byte(body), &b); err != nil {
			t.Fatalf("%s: %v", body, err)
		}
		if _, err := b.limits(); dtma.ErrorCode(err) != dtma.EINVALID || dtma.ErrorField(err) != field {
			t.Errorf("%s: %v; want invalid %s", body, err, field)
		}
	}
}
