// Command bench measures the agent at scale, side by side with the raw
// Docker Engine API on the same image, and writes the table to
// BENCHMARKS.md:
//
//	go run ./bench -n 10,100,1000
//
// It builds the real dtma binary and the FROM scratch echo image
// (internal/testimage/echo), starts the agent with a host id of its own on
// 127.0.0.1, labels every container and network it causes with
// dtma.bench=<run id>, and removes exactly those at the end (also after a
// failure or an interrupt). It talks to nothing but the local Docker
// daemon and 127.0.0.1.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// BenchLabel is the label key of every container and network the bench
// causes; its value is the run id.
const BenchLabel = "dtma.bench"

func main() {
	var (
		ns      = flag.String("n", "10,100", "instance counts to measure, comma-separated")
		out     = flag.String("out", "BENCHMARKS.md", "file whose bench section is (re)written; empty: print only")
		section = flag.String("section", "scale", "name of the section of -out written by this run (e.g. before, after)")
		idle    = flag.Duration("idle", 20*time.Second, "how long registry writes are counted while idle")
		burst   = flag.Int("burst", 200, "deploys of the concurrency row (0: skip it); measured once, at the first N")
		seq     = flag.Int("seq", 20, "sequential deploys of the ratio row")
		fleet   = flag.Int("fleet", 0, "instead: start this many agents on one PostgreSQL (fleet mode)")
		per     = flag.Int("per-agent", 3, "fleet mode: instances each agent deploys")
		startup = flag.String("startup", "", "instead: start-up mode at these counts of containers not running, comma-separated (e.g. 100,1000,5000)")
		env     = flag.String("agent-env", "", "extra KEY=VALUE settings of the agent, comma-separated (e.g. DTMA_NETWORK=bridge)")
	)
	flag.Parse()
	counts, err := parseCounts("-n", *ns)
	if err != nil {
		log.Fatalf("bench: %v", err)
	}
	var startupCounts []int
	if *startup != "" {
		if startupCounts, err = parseCounts("-startup", *startup); err != nil {
			log.Fatalf("bench: %v", err)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	b, err := newBench(ctx)
	if err != nil {
		log.Fatalf("bench: %v", err)
	}
	defer b.cleanup()
	if *env != "" {
		b.agentEnv = strings.Split(*env, ",")
	}
	if len(startupCounts) > 0 {
		sec := *section
		if sec == "scale" {
			sec = "startup"
		}
		var rs []*startupResult
		for _, n := range startupCounts {
			r, err := b.startup(ctx, n)
			b.cleanup() // every N starts from an empty host
			if err != nil {
				log.Fatalf("bench: startup N=%d: %v", n, err)
			}
			rs = append(rs, r)
			// Written after every N: a long last N leaves the others.
			text := renderStartup(rs)
			if *out != "" {
				if err := writeSection(*out, sec, b.header()+text); err != nil {
					log.Fatalf("bench: %v", err)
				}
			}
			if len(rs) == len(startupCounts) {
				fmt.Print(text)
			} else {
				fmt.Fprint(os.Stderr, text)
			}
		}
		return
	}
	if *fleet > 0 {
		r, err := b.runFleet(ctx, *fleet, *per, *idle)
		b.cleanup()
		if err != nil {
			log.Fatalf("bench: fleet: %v", err)
		}
		text := renderFleet(r)
		fmt.Print(text)
		if *out != "" {
			if err := writeSection(*out, *section, b.header()+text); err != nil {
				log.Fatalf("bench: %v", err)
			}
		}
		return
	}
	var results []*result
	for i, n := range counts {
		r, err := b.run(ctx, n, *seq, map[bool]int{true: *burst}[i == 0], *idle)
		if err != nil {
			b.cleanup()
			log.Fatalf("bench: N=%d: %v", n, err)
		}
		results = append(results, r)
		b.cleanup() // every N starts from an empty host
	}
	table := render(results)
	fmt.Print(table)
	if *out != "" {
		if err := writeSection(*out, *section, b.header()+table); err != nil {
			log.Fatalf("bench: %v", err)
		}
	}
}

// parseCounts parses a comma-separated list of positive counts.
func parseCounts(flagName, list string) ([]int, error) {
	var counts []int
	for _, s := range strings.Split(list, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%s: %q is not a positive count", flagName, s)
		}
		counts = append(counts, n)
	}
	return counts, nil
}

// newRunID returns 12 random hex digits.
func newRunID() string {
	p := make([]byte, 6)
	_, _ = rand.Read(p)
	return hex.EncodeToString(p)
}
