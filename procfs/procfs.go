// Package procfs reads the host's load, memory and disk from Linux's /proc
// and statfs(2). It implements dtma.SystemMetricsSource for the legacy
// /status "system_metrics" object and the heartbeat's "system_status".
package procfs

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/agentopia/dtma"
)

// Source reads system metrics from /proc and statfs(2). The zero value is
// ready to use and reports the root filesystem. It holds no state and is
// safe for concurrent use.
//
// CPU load: CPULoadPercent is the 1-minute load average (/proc/loadavg)
// divided by the number of online CPUs (the "cpuN" lines of /proc/stat),
// times 100. It is chosen over sampling /proc/stat twice because it costs
// two small file reads and never makes a request wait; the price is that it
// counts tasks waiting on I/O and lags by about a minute. It exceeds 100
// when more tasks are runnable than there are CPUs.
//
// Memory (/proc/meminfo): total is MemTotal, free is MemAvailable (what can
// be allocated without swapping; on kernels older than 3.14, which lack it,
// MemFree+Buffers+Cached), used is total - free.
//
// Disk (statfs on Root): total is the filesystem size, free is the space
// available to unprivileged users (f_bavail), used is total - free (so the
// blocks reserved for root count as used, and used + free == total).
type Source struct {
	// Root is the mount point reported as disk; "" means "/".
	Root string
}

// procDir is where procfs is mounted. Tests read fixtures through the
// unexported parse functions instead of changing it.
const procDir = "/proc"

// SystemMetrics returns the host's current load, memory and disk. Errors
// are *dtma.Error with code EINTERNAL (procfs unreadable or malformed,
// statfs failed) or the context's error wrapped as EUNAVAILABLE when ctx has
// ended.
func (s Source) SystemMetrics(ctx context.Context) (dtma.SystemMetrics, error) {
	var m dtma.SystemMetrics
	if err := ctx.Err(); err != nil {
		return m, &dtma.Error{Code: dtma.EUNAVAILABLE, Message: "system metrics: request ended", Err: err}
	}

	load, err := s.cpuLoadPercent()
	if err != nil {
		return m, &dtma.Error{Code: dtma.EINTERNAL, Message: "system metrics: cannot read CPU load", Err: err}
	}
	mem, err := readMemory(procDir + "/meminfo")
	if err != nil {
		return m, &dtma.Error{Code: dtma.EINTERNAL, Message: "system metrics: cannot read memory", Err: err}
	}
	disk, err := s.disk()
	if err != nil {
		return m, &dtma.Error{Code: dtma.EINTERNAL, Message: "system metrics: cannot read disk", Err: err}
	}
	m.CPULoadPercent, m.Memory, m.Disk = load, mem, disk
	return m, nil
}

func (s Source) cpuLoadPercent() (float64, error) {
	avg, err := os.ReadFile(procDir + "/loadavg")
	if err != nil {
		return 0, err
	}
	load1, err := parseLoadavg(avg)
	if err != nil {
		return 0, err
	}
	stat, err := os.Open(procDir + "/stat")
	if err != nil {
		return 0, err
	}
	defer stat.Close()
	n, err := countCPUs(stat)
	if err != nil {
		return 0, err
	}
	return loadPercent(load1, n), nil
}

// loadPercent returns load1 / ncpu * 100, rounded to two decimals.
func loadPercent(load1 float64, ncpu int) float64 {
	p := load1 / float64(ncpu) * 100
	return float64(int64(p*100+0.5)) / 100
}

// parseLoadavg returns the 1-minute load average, the first field of
// /proc/loadavg ("0.86 0.31 0.11 2/113 8160").
func parseLoadavg(b []byte) (float64, error) {
	f := bytes.Fields(b)
	if len(f) == 0 {
		return 0, fmt.Errorf("loadavg: empty")
	}
	v, err := strconv.ParseFloat(string(f[0]), 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("loadavg: bad 1-minute field %q", f[0])
	}
	return v, nil
}

// countCPUs counts the "cpuN" lines of /proc/stat (one per online CPU).
func countCPUs(r io.Reader) (int, error) {
	n := 0
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "cpu") {
			continue
		}
		name, _, _ := strings.Cut(line, " ")
		if _, err := strconv.Atoi(name[len("cpu"):]); err == nil {
			n++
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("stat: %w", err)
	}
	if n == 0 {
		return 0, fmt.Errorf("stat: no cpuN lines")
	}
	return n, nil
}

func readMemory(path string) (dtma.MemoryMetric, error) {
	f, err := os.Open(path)
	if err != nil {
		return dtma.MemoryMetric{}, err
	}
	defer f.Close()
	return parseMeminfo(f)
}

// parseMeminfo reads /proc/meminfo ("MemTotal:  24684092 kB" lines).
func parseMeminfo(r io.Reader) (dtma.MemoryMetric, error) {
	v := map[string]uint64{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		key, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		n, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return dtma.MemoryMetric{}, fmt.Errorf("meminfo: %s: bad value %q", key, f[0])
		}
		if len(f) > 1 && f[1] == "kB" {
			n *= 1024
		}
		v[key] = n
	}
	if err := sc.Err(); err != nil {
		return dtma.MemoryMetric{}, fmt.Errorf("meminfo: %w", err)
	}
	total, ok := v["MemTotal"]
	if !ok || total == 0 {
		return dtma.MemoryMetric{}, fmt.Errorf("meminfo: no MemTotal")
	}
	free, ok := v["MemAvailable"]
	if !ok {
		free = v["MemFree"] + v["Buffers"] + v["Cached"]
	}
	free = min(free, total)
	return dtma.MemoryMetric{TotalBytes: total, UsedBytes: total - free, FreeBytes: free}, nil
}

func (s Source) disk() (dtma.DiskMetric, error) {
	root := s.Root
	if root == "" {
		root = "/"
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(root, &st); err != nil {
		return dtma.DiskMetric{}, fmt.Errorf("statfs %s: %w", root, err)
	}
	return diskMetric(root, uint64(st.Bsize), st.Blocks, st.Bavail), nil
}

// diskMetric converts statfs block counts to bytes.
func diskMetric(mount string, bsize, blocks, bavail uint64) dtma.DiskMetric {
	total := blocks * bsize
	free := min(bavail*bsize, total)
	return dtma.DiskMetric{Mount: mount, TotalBytes: total, UsedBytes: total - free, FreeBytes: free}
}

var _ dtma.SystemMetricsSource = Source{}
