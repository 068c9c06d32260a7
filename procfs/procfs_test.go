package procfs

import (
	"context"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/agentopia/dtma"
)

func TestSource_SystemMetrics(t *testing.T) {
	t.Parallel()
	m, err := Source{}.SystemMetrics(context.Background())
	if err != nil {
		t.Fatalf("SystemMetrics: %v", err)
	}
	if m.CPULoadPercent < 0 {
		t.Errorf("cpu_load_percent = %v, want >= 0", m.CPULoadPercent)
	}
	if m.Memory.TotalBytes == 0 {
		t.Errorf("memory total = 0")
	}
	if m.Memory.UsedBytes+m.Memory.FreeBytes != m.Memory.TotalBytes {
		t.Errorf("memory used %d + free %d != total %d", m.Memory.UsedBytes, m.Memory.FreeBytes, m.Memory.TotalBytes)
	}
	if m.Memory.FreeBytes == 0 {
		t.Errorf("memory free = 0 on a host running this test")
	}
	// The Go runtime of this very test holds at least a few MiB.
	if m.Memory.UsedBytes < 1<<20 {
		t.Errorf("memory used = %d, want >= 1 MiB", m.Memory.UsedBytes)
	}
	if m.Disk.Mount != "/" {
		t.Errorf("disk mount = %q, want /", m.Disk.Mount)
	}
	if m.Disk.TotalBytes == 0 {
		t.Errorf("disk total = 0")
	}
	if m.Disk.UsedBytes+m.Disk.FreeBytes != m.Disk.TotalBytes {
		t.Errorf("disk used %d + free %d != total %d", m.Disk.UsedBytes, m.Disk.FreeBytes, m.Disk.TotalBytes)
	}
}

func TestSource_SystemMetrics_Root(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	m, err := Source{Root: dir}.SystemMetrics(context.Background())
	if err != nil {
		t.Fatalf("SystemMetrics: %v", err)
	}
	if m.Disk.Mount != dir {
		t.Errorf("disk mount = %q, want %q", m.Disk.Mount, dir)
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	if want := st.Blocks * uint64(st.Bsize); m.Disk.TotalBytes != want {
		t.Errorf("disk total = %d, want %d (statfs of %s)", m.Disk.TotalBytes, want, dir)
	}
}

func TestSource_SystemMetrics_BadRoot(t *testing.T) {
	t.Parallel()
	_, err := Source{Root: "/no/such/dir/for/dtma"}.SystemMetrics(context.Background())
	if got := dtma.ErrorCode(err); got != dtma.EINTERNAL {
		t.Fatalf("code = %q (err %v), want %q", got, err, dtma.EINTERNAL)
	}
}

func TestSource_SystemMetrics_CanceledContext(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Source{}.SystemMetrics(ctx)
	if got := dtma.ErrorCode(err); got != dtma.EUNAVAILABLE {
		t.Fatalf("code = %q (err %v), want %q", got, err, dtma.EUNAVAILABLE)
	}
}

func TestCountCPUs_Proc(t *testing.T) {
	t.Parallel()
	f, err := os.Open("/proc/stat")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n, err := countCPUs(f)
	if err != nil {
		t.Fatal(err)
	}
	// The affinity mask (runtime.NumCPU) is a subset of the online CPUs.
	if n < runtime.NumCPU() {
		t.Errorf("countCPUs = %d, want >= runtime.NumCPU() = %d", n, runtime.NumCPU())
	}
}

func TestParseLoadavg(t *testing.T) {
	t.Parallel()
	v, err := parseLoadavg([]byte("0.86 0.31 0.11 2/113 8160\n"))
	if err != nil || v != 0.86 {
		t.Fatalf("parseLoadavg = %v, %v; want 0.86, nil", v, err)
	}
	for _, bad := range []string{"", "\n", "x 1 2", "-1 0 0 1/1 1"} {
		if _, err := parseLoadavg([]byte(bad)); err == nil {
			t.Errorf("parseLoadavg(%q): no error", bad)
		}
	}
}

func TestCountCPUs(t *testing.T) {
	t.Parallel()
	stat := "cpu  6508 0 2840 52756 484 0 41 13 0 0\n" +
		"cpu0 2970 0 1164 27169 23 0 8 3 0 0\n" +
		"cpu1 3537 0 1676 25586 461 0 32 9 0 0\n" +
		"cpu3 3537 0 1676 25586 461 0 32 9 0 0\n" +
		"intr 1 2 3\nctxt 5\n"
	n, err := countCPUs(strings.NewReader(stat))
	if err != nil || n != 3 {
		t.Fatalf("countCPUs = %d, %v; want 3, nil", n, err)
	}
	if _, err := countCPUs(strings.NewReader("cpu  1 2 3\nintr 1\n")); err == nil {
		t.Error("countCPUs without cpuN lines: no error")
	}
}

func TestLoadPercent(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		load float64
		n    int
		want float64
	}{
		{0, 2, 0},
		{1, 2, 50},
		{0.86, 2, 43},
		{1, 3, 33.33},
		{6, 2, 300},
	} {
		if got := loadPercent(tc.load, tc.n); got != tc.want {
			t.Errorf("loadPercent(%v, %d) = %v, want %v", tc.load, tc.n, got, tc.want)
		}
	}
}

func TestParseMeminfo(t *testing.T) {
	t.Parallel()
	m, err := parseMeminfo(strings.NewReader("MemTotal:       1000 kB\nMemFree:         100 kB\nMemAvailable:    400 kB\nBuffers:          10 kB\nHugePages_Total:       0\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := dtma.MemoryMetric{TotalBytes: 1000 * 1024, UsedBytes: 600 * 1024, FreeBytes: 400 * 1024}
	if m != want {
		t.Errorf("parseMeminfo = %+v, want %+v", m, want)
	}

	// Kernels before 3.14 have no MemAvailable.
	m, err = parseMeminfo(strings.NewReader("MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 10 kB\nCached: 200 kB\n"))
	if err != nil {
		t.Fatal(err)
	}
	want = dtma.MemoryMetric{TotalBytes: 1000 * 1024, UsedBytes: 690 * 1024, FreeBytes: 310 * 1024}
	if m != want {
		t.Errorf("parseMeminfo without MemAvailable = %+v, want %+v", m, want)
	}

	for _, bad := range []string{"", "MemFree: 1 kB\n", "MemTotal: x kB\n"} {
		if _, err := parseMeminfo(strings.NewReader(bad)); err == nil {
			t.Errorf("parseMeminfo(%q): no error", bad)
		}
	}
}

func TestDiskMetric(t *testing.T) {
	t.Parallel()
	got := diskMetric("/data", 4096, 1000, 250)
	want := dtma.DiskMetric{Mount: "/data", TotalBytes: 4096000, UsedBytes: 3072000, FreeBytes: 1024000}
	if got != want {
		t.Errorf("diskMetric = %+v, want %+v", got, want)
	}
}
