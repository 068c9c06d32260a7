package registrytest

import (
	"context"
	"fmt"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/agentopia/dtma"
)

// BenchRows is how many rows the read benchmarks keep in the store.
const BenchRows = 1000

// Bench runs sub-benchmarks of the registry's hot paths. Besides ns/op each
// reports the p50 and p99 latency of a single operation ("p50-µs",
// "p99-µs"). open has the same contract as Run's (with *testing.B). Every
// sub-benchmark seeds its own store; seeding is not timed.
func Bench(b *testing.B, open func(b *testing.B, hostID string) dtma.Registry) {
	ctx := context.Background()

	b.Run("FindByName", func(b *testing.B) {
		r := open(b, HostA)
		rows := seed(b, r, BenchRows)
		measure(b, func(i int) {
			name := rows[i%len(rows)].Name
			got, err := r.FindInstances(ctx, dtma.InstanceFilter{Name: &name})
			if err != nil || len(got) != 1 {
				b.Fatalf("FindInstances(name %q) = %d rows, %v; want 1 row", name, len(got), err)
			}
		})
	})

	b.Run("FindByID", func(b *testing.B) {
		r := open(b, HostA)
		rows := seed(b, r, BenchRows)
		measure(b, func(i int) {
			id := rows[i%len(rows)].ID
			if _, err := r.FindInstanceByID(ctx, id); err != nil {
				b.Fatalf("FindInstanceByID(%s): %v", id, err)
			}
		})
	})

	b.Run("ListInstances", func(b *testing.B) {
		r := open(b, HostA)
		seed(b, r, BenchRows)
		measure(b, func(int) {
			got, err := r.FindInstances(ctx, dtma.InstanceFilter{})
			if err != nil || len(got) != BenchRows {
				b.Fatalf("FindInstances = %d rows, %v; want %d rows", len(got), err, BenchRows)
			}
		})
	})

	b.Run("UpdateObservedUnchanged", func(b *testing.B) {
		r := open(b, HostA)
		rows := seed(b, r, BenchRows)
		o := benchObserved(0)
		for _, inst := range rows {
			if _, err := r.UpdateObserved(ctx, inst.ID, o); err != nil {
				b.Fatalf("UpdateObserved: %v", err)
			}
		}
		measure(b, func(i int) {
			changed, err := r.UpdateObserved(ctx, rows[i%len(rows)].ID, o)
			if err != nil || changed {
				b.Fatalf("UpdateObserved(same) = %v, %v; want false, nil", changed, err)
			}
		})
	})

	b.Run("UpdateObservedChanged", func(b *testing.B) {
		r := open(b, HostA)
		rows := seed(b, r, BenchRows)
		// Each row's restart count is bumped past what it holds, so every
		// call writes.
		counts := make([]int, len(rows))
		for i, inst := range rows {
			counts[i] = inst.RestartCount
		}
		measure(b, func(i int) {
			k := i % len(rows)
			counts[k]++
			changed, err := r.UpdateObserved(ctx, rows[k].ID, benchObserved(counts[k]))
			if err != nil || !changed {
				b.Fatalf("UpdateObserved(new) = %v, %v; want true, nil", changed, err)
			}
		})
	})

	b.Run("CreateDelete", func(b *testing.B) {
		r := open(b, HostA)
		seed(b, r, BenchRows)
		run := dtma.NewUUID()[:8]
		measure(b, func(i int) {
			inst := NewInstance(fmt.Sprintf("bench-create-%s-%d", run, i))
			if err := r.CreateInstance(ctx, inst); err != nil {
				b.Fatalf("CreateInstance: %v", err)
			}
			if err := r.DeleteInstance(ctx, inst.ID); err != nil {
				b.Fatalf("DeleteInstance: %v", err)
			}
		})
	})
}

func benchObserved(restarts int) dtma.Observed {
	return dtma.Observed{
		DockerStatus: dtma.DockerRunning,
		ContainerID:  "4f1d0c6f8a3b2e1d9c8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d",
		StartedAt:    time.Date(2024, 1, 2, 3, 4, 5, 123456000, time.UTC),
		RestartCount: restarts,
	}
}

// seed makes the store hold rows named bench-0000 ... and returns them. It
// creates only the rows that are missing, so it may run against a store a
// previous run of the same benchmark seeded.
func seed(b *testing.B, r dtma.Registry, n int) []*dtma.Instance {
	b.Helper()
	ctx := context.Background()
	existing, err := r.FindInstances(ctx, dtma.InstanceFilter{})
	if err != nil {
		b.Fatalf("seed: FindInstances: %v", err)
	}
	byName := make(map[string]*dtma.Instance, len(existing))
	for _, inst := range existing {
		byName[inst.Name] = inst
	}
	rows := make([]*dtma.Instance, 0, n)
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("bench-%04d", i)
		if inst, ok := byName[name]; ok {
			rows = append(rows, inst)
			continue
		}
		inst := NewInstance(name)
		if err := r.CreateInstance(ctx, inst); err != nil {
			b.Fatalf("seed: CreateInstance(%s): %v", name, err)
		}
		rows = append(rows, inst)
	}
	return rows
}

// measure runs op once per benchmark iteration (via b.Loop, so setup before
// it is not timed), records each call's latency and reports p50 and p99.
func measure(b *testing.B, op func(i int)) {
	b.Helper()
	lat := make([]time.Duration, 0, 4096)
	i := 0
	for b.Loop() {
		start := time.Now()
		op(i)
		lat = append(lat, time.Since(start))
		i++
	}
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	b.ReportMetric(percentile(lat, 50), "p50-µs")
	b.ReportMetric(percentile(lat, 99), "p99-µs")
}

// percentile returns the nearest-rank p-th percentile of sorted, in µs.
func percentile(sorted []time.Duration, p float64) float64 {
	k := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	k = max(0, min(k, len(sorted)-1))
	return float64(sorted[k]) / float64(time.Microsecond)
}
