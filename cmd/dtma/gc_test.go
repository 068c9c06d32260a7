package main

import (
	"runtime/debug"
	"testing"
)

// The agent's GC default applies only when the operator set neither GOGC
// nor GOMEMLIMIT; either leaves the runtime's own setting alone.
func TestGCDefault(t *testing.T) {
	old := debug.SetGCPercent(100)
	defer debug.SetGCPercent(old)
	for _, env := range []map[string]string{{"GOGC": "200"}, {"GOMEMLIMIT": "64MiB"}, {"GOGC": "off"}} {
		if gcDefault(func(k string) string { return env[k] }) {
			t.Errorf("%v: default applied", env)
		}
		if got := debug.SetGCPercent(100); got != 100 {
			t.Errorf("%v: GC percent %d, want left at 100", env, got)
		}
	}
	if !gcDefault(func(string) string { return "" }) {
		t.Errorf("nothing set: default not applied")
	}
	if got := debug.SetGCPercent(100); got != defaultGCPercent {
		t.Errorf("nothing set: GC percent %d, want %d", got, defaultGCPercent)
	}
}
