// Package promtest reads Prometheus text expositions in tests with the
// client library's own parser. It is imported only by _test files.
package promtest

import (
	"maps"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Parse parses a text exposition into its metric families; a body the
// parser refuses fails the test.
func Parse(tb testing.TB, body string) map[string]*dto.MetricFamily {
	tb.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		tb.Fatalf("parse metrics: %v\n%s", err, body)
	}
	return fams
}

// Value returns the value of the series of family name whose labels are
// exactly labels — a counter's or gauge's value, a histogram's sample
// count — and whether there is one.
func Value(fams map[string]*dto.MetricFamily, name string, labels map[string]string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
	for _, m := range f.Metric {
		got := map[string]string{}
		for _, l := range m.Label {
			got[l.GetName()] = l.GetValue()
		}
		if !(len(labels) == 0 && len(got) == 0) && !maps.Equal(got, labels) {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}
