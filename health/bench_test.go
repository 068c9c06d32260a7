package health_test

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/agentopia/dtma"
	"github.com/agentopia/dtma/health"
)

// BenchmarkProber500MCP is the cost of health-checking 500 MCP tools every
// 10 s: the MCP fixture runs as a separate process (its CPU is not
// counted), the prober here probes it 500 times per interval over
// Streamable HTTP (initialize, ping, tools/list), and the benchmark
// reports this process's CPU (user+system, as a share of one core) and
// RSS over a steady minute. Not a test: run it on purpose.
//
//	go test -run xxx -bench BenchmarkProber500MCP -benchtime 1x ./health/
func BenchmarkProber500MCP(b *testing.B) {
	const targets, interval, window = 500, 10 * time.Second, 60 * time.Second
	dir := b.TempDir()
	bin := filepath.Join(dir, "mcp")
	build := exec.Command("go", "build", "-o", bin, "../internal/testimage/mcp")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("build fixture: %v\n%s", err, out)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	srv := exec.Command(bin)
	srv.Env = append(os.Environ(), "PORT="+strconv.Itoa(port))
	if err := srv.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
	addr := "127.0.0.1:" + strconv.Itoa(port)
	for i := 0; ; i++ {
		if resp, err := http.Get("http://" + addr + "/control"); err == nil {
			resp.Body.Close()
			break
		}
		if i > 200 {
			b.Fatal("fixture never listened")
		}
		time.Sleep(50 * time.Millisecond)
	}

	var mu sync.Mutex
	var lat []time.Duration
	results := map[string]int{}
	p := health.New(health.Config{Concurrency: 32, OnProbe: func(_ dtma.CheckType, r string, d time.Duration) {
		mu.Lock()
		lat = append(lat, d)
		results[r]++
		mu.Unlock()
	}})
	defer p.Close()
	check := dtma.HealthCheck{Type: dtma.CheckMCP, Interval: interval}
	for i := 0; i < targets; i++ {
		p.Set(health.Target{ID: strconv.Itoa(i), Check: check, Addr: addr, StartedAt: time.Now()})
	}
	time.Sleep(interval + 2*time.Second) // warm-up: every target probed once
	mu.Lock()
	lat, results = nil, map[string]int{}
	mu.Unlock()
	cpu0 := cpuTime()
	start := time.Now()
	b.ResetTimer()
	time.Sleep(window)
	elapsed := time.Since(start)
	cpu := cpuTime() - cpu0
	b.StopTimer()
	rss := rssMB()

	mu.Lock()
	defer mu.Unlock()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(q float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[int(q*float64(len(lat)-1))]
	}
	healthy := 0
	for i := 0; i < targets; i++ {
		if st, _ := p.Status(strconv.Itoa(i)); st.State == dtma.HealthHealthy {
			healthy++
		}
	}
	b.ReportMetric(100*cpu.Seconds()/elapsed.Seconds(), "%cpu")
	b.ReportMetric(rss, "MB-rss")
	b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "probes/s")
	b.Logf("%d targets every %v for %v: %d probes %v, latency p50 %v p99 %v, %d healthy; CPU %.1f %% of one core, RSS %.0f MB",
		targets, interval, elapsed.Round(time.Second), len(lat), fmt.Sprint(results), pct(0.5).Round(100*time.Microsecond),
		pct(0.99).Round(100*time.Microsecond), healthy, 100*cpu.Seconds()/elapsed.Seconds(), rss)
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func rssMB() float64 {
	b, _ := os.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(line)
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}
