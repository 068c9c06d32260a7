package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/agentopia/dtma/docker"
	"github.com/agentopia/dtma/runtimetest"
)

// fakeServed is the fake runtime as serve drives it.
type fakeServed struct{ *runtimetest.Runtime }

func (fakeServed) ServerVersion(context.Context) (string, string, error) { return "fake", "1.41", nil }
func (fakeServed) Close() error                                          { return nil }

// TestBenchServeMemory is the memory harness of the agent (issue 10): the
// agent wired exactly as `dtma serve` wires it, on the SQLite registry and
// the fake runtime, holding DTMA_BENCH_MEM_N instances (default 1000)
// deployed through the API as `go run ./bench` deploys them (20 with a
// published port, the rest without), after lists and a GET-one hammer
// (GOGC and GOMEMLIMIT are passed on to serve as the binary sees them). It
// reports the Go runtime's memory after GC and writes a heap profile to
// DTMA_BENCH_MEM_PROFILE when set. Run with DTMA_BENCH_MEM=1:
//
//	DTMA_BENCH_MEM=1 go test -count=1 -run TestBenchServeMemory -v ./cmd/dtma/
//
// The process holds the harness too (the fake daemon's containers, the
// HTTP client): the profile tells them apart.
func TestBenchServeMemory(t *testing.T) {
	if os.Getenv("DTMA_BENCH_MEM") == "" {
		t.Skip("set DTMA_BENCH_MEM=1 to run the memory harness")
	}
	n := 1000
	if v := os.Getenv("DTMA_BENCH_MEM_N"); v != "" {
		n, _ = strconv.Atoi(v)
	}
	if os.Getenv("DTMA_BENCH_MEM_PROFILE") != "" {
		runtime.MemProfileRate = 64 // every allocation, nearly: exact per-instance figures
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	const tok = "bench-token-0123456789abcdef0123"
	host := "bench-mem"
	env := map[string]string{
		"DTMA_BEARER_TOKEN":    tok,
		"DTMA_LISTEN":          "127.0.0.1:" + strconv.Itoa(port),
		"DTMA_DATA_DIR":        t.TempDir(),
		"DTMA_HOST_ID":         host,
		"DTMA_PORT_RANGE":      "46000-46999",
		"DTMA_LOG_LEVEL":       "warn",
		"DTMA_UI":              "false",
		"DTMA_MAX_CONNECTIONS": "4096",
	}
	for _, k := range []string{"GOGC", "GOMEMLIMIT"} { // as the binary would see them
		if v := os.Getenv(k); v != "" {
			env[k] = v
		}
	}
	for _, kv := range strings.Split(os.Getenv("DTMA_BENCH_MEM_ENV"), ",") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	c := mustServeConfig(t, env)
	rt := runtimetest.New(host)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	s := &streams{out: io.Discard, err: io.Discard, getenv: func(k string) string { return env[k] }}
	go func() {
		done <- serve(ctx, c, s, func(docker.Options) (servedRuntime, error) { return fakeServed{rt}, nil })
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	cl := &http.Client{Timeout: time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	// do sends a request; the answer's body is returned only for errors
	// (the client's garbage would count in the process's GC otherwise).
	do := func(method, path string, body any) (int, []byte) {
		var r io.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			r = bytes.NewReader(b)
		}
		req, _ := http.NewRequest(method, base+path, r)
		req.Header.Set("Authorization", "Bearer "+tok)
		res, err := cl.Do(req)
		if err != nil {
			return 0, nil
		}
		defer res.Body.Close()
		if res.StatusCode < 300 {
			_, _ = io.Copy(io.Discard, res.Body)
			return res.StatusCode, nil
		}
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, b
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		if code, _ := do("GET", "/v1/health", nil); code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("agent not ready")
		}
		time.Sleep(20 * time.Millisecond)
	}

	t0 := time.Now()
	var next, failed atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				body := map[string]any{"name": fmt.Sprintf("fill-%d", i), "image": "bench/echo:latest"}
				if i < 20 {
					body["ports"] = []map[string]any{{"container_port": 8080}}
				}
				if code, b := do("POST", "/v1/instances", body); code != http.StatusCreated {
					if failed.Add(1) < 3 {
						t.Logf("deploy %d: %d %s", i, code, b)
					}
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("deployed %d (%d failed) in %s", n, failed.Load(), time.Since(t0).Round(time.Millisecond))

	if p := os.Getenv("DTMA_BENCH_MEM_CPU"); p != "" {
		f, _ := os.Create(p)
		_ = pprof.StartCPUProfile(f)
		defer f.Close()
	}
	cpu0 := cpuTime()
	var lat []time.Duration
	for i := 0; i < 200; i++ {
		t := time.Now()
		do("GET", "/v1/instances", nil)
		lat = append(lat, time.Since(t))
	}
	slices.Sort(lat)
	pprof.StopCPUProfile()
	cpuList := (cpuTime() - cpu0) / 200
	cpu0 = cpuTime()
	var count atomic.Int64
	hctx, hcancel := context.WithTimeout(context.Background(), 3*time.Second)
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for hctx.Err() == nil {
				if code, _ := do("GET", "/v1/instances/fill-0", nil); code == http.StatusOK {
					count.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	hcancel()
	cpuOne := (cpuTime() - cpu0) / time.Duration(max(count.Load(), 1))
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	t.Logf("list p50 %s p99 %s, CPU %s a list; GET one %.0f req/s, CPU %s a request (in-process: the client's CPU included)",
		lat[len(lat)/2], lat[len(lat)*99/100], cpuList, float64(count.Load())/3, cpuOne)
	mb := func(b uint64) string { return fmt.Sprintf("%.2f MB", float64(b)/1e6) }
	t.Logf("before GC: HeapInuse %s HeapAlloc %s HeapSys %s HeapReleased %s StackInuse %s Sys %s NextGC %s RSS %s",
		mb(ms.HeapInuse), mb(ms.HeapAlloc), mb(ms.HeapSys), mb(ms.HeapReleased), mb(ms.StackInuse), mb(ms.Sys), mb(ms.NextGC), rss())
	cl.CloseIdleConnections()
	time.Sleep(time.Second)
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	t.Logf("after GC:  HeapInuse %s HeapAlloc %s HeapSys %s HeapReleased %s StackInuse %s Sys %s NextGC %s goroutines %d RSS %s",
		mb(ms.HeapInuse), mb(ms.HeapAlloc), mb(ms.HeapSys), mb(ms.HeapReleased), mb(ms.StackInuse), mb(ms.Sys), mb(ms.NextGC), runtime.NumGoroutine(), rss())
	// Idle: what the agent allocates with nobody calling it (the health
	// monitor's sync every 2 s, the reconciler's relists).
	if p := os.Getenv("DTMA_BENCH_MEM_PROFILE"); p != "" { // the idle window's allocations: pprof -base p.idle0 p
		if f, err := os.Create(p + ".idle0"); err == nil {
			_ = pprof.Lookup("heap").WriteTo(f, 0)
			f.Close()
		}
	}
	runtime.ReadMemStats(&ms)
	a0 := ms.TotalAlloc
	time.Sleep(10 * time.Second)
	runtime.ReadMemStats(&ms)
	t.Logf("idle: %.0f KB/s allocated over 10 s", float64(ms.TotalAlloc-a0)/1e3/10)
	runtime.GC()
	runtime.ReadMemStats(&ms)
	t.Logf("after the idle window and a GC: HeapAlloc %s (live)", mb(ms.HeapAlloc))
	for _, f := range []string{"dtma.db", "dtma.db-wal"} {
		if st, err := os.Stat(env["DTMA_DATA_DIR"] + "/" + f); err == nil {
			t.Logf("%s: %d bytes", f, st.Size())
		}
	}
	if p := os.Getenv("DTMA_BENCH_MEM_PROFILE"); p != "" {
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		_ = pprof.Lookup("heap").WriteTo(f, 0)
		f.Close()
	}
}

// cpuTime is the CPU time (user and system) the process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// rss is the process's VmRSS.
func rss() (out string) {
	b, _ := os.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") || strings.HasPrefix(line, "RssAnon:") {
			out += line + " "
		}
	}
	return out
}
