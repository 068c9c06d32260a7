package dtma

import "context"

// SystemMetrics is the host's load, memory and disk, as reported in the
// legacy /status "system_metrics" object and in the heartbeat's
// "system_status". Field names are the legacy contract's.
type SystemMetrics struct {
	CPULoadPercent float64      `json:"cpu_load_percent"`
	Memory         MemoryMetric `json:"memory"`
	Disk           DiskMetric   `json:"disk"`
}

// MemoryMetric is host memory in bytes.
type MemoryMetric struct {
	TotalBytes uint64 `json:"total_bytes"`
	UsedBytes  uint64 `json:"used_bytes"`
	FreeBytes  uint64 `json:"free_bytes"`
}

// DiskMetric is one filesystem's size in bytes.
type DiskMetric struct {
	Mount      string `json:"mount"`
	TotalBytes uint64 `json:"total_bytes"`
	UsedBytes  uint64 `json:"used_bytes"`
	FreeBytes  uint64 `json:"free_bytes"`
}

// SystemMetricsSource reads the host's metrics. Implementation:
// procfs.Source.
type SystemMetricsSource interface {
	SystemMetrics(ctx context.Context) (SystemMetrics, error)
}
