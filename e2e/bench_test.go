package e2e

import (
	"fmt"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// latencies records per-operation durations and reports p50/p99.
type latencies []time.Duration

func (l latencies) report(b *testing.B) {
	if len(l) == 0 {
		return
	}
	sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
	pct := func(p float64) float64 {
		return float64(l[int(p*float64(len(l)-1))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
}

// BenchmarkAPI measures the agent's hot paths end to end: the real binary,
// the real Docker daemon, the embedded SQLite registry. Run with
//
//	go test -run xxx -bench BenchmarkAPI -benchtime 20x ./e2e/
func BenchmarkAPI(b *testing.B) {
	img := EchoImage(b)

	b.Run("DeployRemove", func(b *testing.B) {
		a := StartAgent(b, AgentOptions{})
		var lat latencies
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			name := fmt.Sprintf("bench-deploy-%d", i)
			start := time.Now()
			a.Expect(http.StatusCreated, "POST", "/v1/instances", map[string]any{"name": name, "image": img,
				"ports": []map[string]any{{"container_port": 8080}}})
			lat = append(lat, time.Since(start))
			a.Expect(http.StatusNoContent, "DELETE", "/v1/instances/"+name, nil)
		}
		b.StopTimer()
		lat.report(b)
	})

	b.Run("StopStart", func(b *testing.B) {
		a := StartAgent(b, AgentOptions{})
		a.Expect(http.StatusCreated, "POST", "/v1/instances", map[string]any{"name": "bench-stopstart", "image": img})
		var lat latencies
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			start := time.Now()
			a.Expect(http.StatusOK, "POST", "/v1/instances/bench-stopstart/stop", nil)
			a.Expect(http.StatusOK, "POST", "/v1/instances/bench-stopstart/start", nil)
			lat = append(lat, time.Since(start))
		}
		b.StopTimer()
		lat.report(b)
	})

	b.Run("List100", func(b *testing.B) {
		a := StartAgent(b, AgentOptions{})
		for i := 0; i < 100; i++ {
			// Created but cheap: the list is served from the registry view,
			// so the containers' state does not matter for this path.
			a.Expect(http.StatusCreated, "POST", "/v1/instances", map[string]any{"name": fmt.Sprintf("bench-list-%03d", i), "image": img})
		}
		var lat latencies
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			start := time.Now()
			a.Expect(http.StatusOK, "GET", "/v1/instances", nil)
			if i == 0 {
				b.ReportMetric(a.rssMB(), "agent-rss-MB")
			}
			a.Expect(http.StatusOK, "GET", "/tools/status", nil)
			lat = append(lat, time.Since(start)/2)
		}
		b.StopTimer()
		lat.report(b)
	})
}

// rssMB reads the agent process's resident set size from /proc.
func (a *Agent) rssMB() float64 {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(a.cmd.Process.Pid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(line)
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}
