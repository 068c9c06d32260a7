package main

import (
	"strings"
	"testing"
)

// FuzzParseLabels: DTMA_CONTAINER_LABELS never panics the parser, never
// yields an empty key, a key with '=' or one of DTMA's own dtma.* keys.
func FuzzParseLabels(f *testing.F) {
	for _, s := range []string{"", "a=b,c=d", "team=tools, env = prod ", "=v", "k", "dtma.host=x", "a=b=c,,", "dtma.managed=false", "k=v,\x00=\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		labels, err := parseLabels(v)
		if err != nil {
			return
		}
		for k := range labels {
			if k == "" || strings.Contains(k, "=") || strings.Contains(k, ",") {
				t.Fatalf("parseLabels(%q) gave key %q", v, k)
			}
			switch k {
			case "dtma.managed", "dtma.host", "dtma.instance", "dtma.instance-id", "dtma.account-tool-instance-id", "dtma.spec-hash", "dtma.env-names", "dtma.ports":
				t.Fatalf("parseLabels(%q) let DTMA's own label %q through", v, k)
			}
		}
	})
}
