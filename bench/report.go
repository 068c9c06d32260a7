package main

// The table and BENCHMARKS.md.

import (
	"fmt"
	"os"
	"strings"
	"time"
)

// ms formats d in milliseconds.
func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }

// tableRows writes to sb the head of a Markdown table with a "what" and a
// "goal" column and one column per result (headed N=n(r)), and returns the
// function that writes one row: f(r) is the cell of result r.
func tableRows[R any](sb *strings.Builder, rs []R, n func(R) int) func(what, goal string, f func(R) string) {
	sb.WriteString("| what | goal |")
	for _, r := range rs {
		fmt.Fprintf(sb, " N=%d |", n(r))
	}
	sb.WriteString("\n|---|---|")
	for range rs {
		sb.WriteString("---|")
	}
	sb.WriteString("\n")
	return func(what, goal string, f func(R) string) {
		fmt.Fprintf(sb, "| %s | %s |", what, goal)
		for _, r := range rs {
			fmt.Fprintf(sb, " %s |", f(r))
		}
		sb.WriteString("\n")
	}
}

// render returns the Markdown table of results, one column per N.
func render(rs []*result) string {
	var sb strings.Builder
	row := tableRows(&sb, rs, func(r *result) int { return r.n })
	ratio := func(a, b time.Duration) string {
		if b == 0 {
			return "–"
		}
		return fmt.Sprintf("%.2f×", float64(a)/float64(b))
	}
	row("deploy, sequential, p50: agent / raw create+start of the same container (its config, its isolated network)", "≤ 1.05×", func(r *result) string {
		return fmt.Sprintf("%s / %s = %s", ms(r.seqAgent), ms(r.seqSame), ratio(r.seqAgent, r.seqSame))
	})
	row("… agent / raw `docker run -d -p` on the default bridge (no isolation, no limits)", "–", func(r *result) string {
		return fmt.Sprintf("%s / %s = %s", ms(r.seqAgent), ms(r.seqRaw), ratio(r.seqAgent, r.seqRaw))
	})
	row("deploys at concurrency 20: success, wall agent / raw", "all, keep", func(r *result) string {
		if r.burstN == 0 {
			return "–"
		}
		return fmt.Sprintf("%d/%d, %.1f s / %.1f s = %s", r.burstOK, r.burstN, r.burstAgent.Seconds(), r.burstRaw.Seconds(), ratio(r.burstAgent, r.burstRaw))
	})
	row("`GET /v1/instances` p50 (Engine's filtered list)", "≤ 3 ms", func(r *result) string {
		return fmt.Sprintf("%s (%s)", ms(r.listP50), ms(r.engineListP50))
	})
	row("`GET /tools/status` p50", "≤ 3 ms", func(r *result) string { return ms(r.statusP50) })
	row("`GET /v1/instances/{id}`, 32 clients (median of five 2 s windows)", "≥ 20,000 req/s quiet", func(r *result) string {
		return fmt.Sprintf("%.0f req/s", r.getOneRPS)
	})
	row("SIGKILL → serving with a full observation", "≤ 2 s", func(r *result) string {
		return fmt.Sprintf("%.2f s", r.killReady.Seconds())
	})
	row("registry deleted → rebuilt, fully observed (rows; tools restarted)", "≤ 5 s, N, 0", func(r *result) string {
		return fmt.Sprintf("%.2f s (%d; %d)", r.rebuildReady.Seconds(), r.rebuildCount, r.restartedByRebuild)
	})
	row("RSS right after the reads (private anonymous + the binary's file pages)", "≤ 30 MB", func(r *result) string {
		return fmt.Sprintf("%.1f MB (%.1f + %.1f)", r.rss, r.rssAnon, r.rssFile)
	})
	row("registry file changes while idle", "0", func(r *result) string {
		return fmt.Sprintf("%d in %s", r.idleWrites, r.idleWindow)
	})
	row("RSS after that idle window (private anonymous)", "≤ 30 MB", func(r *result) string {
		return fmt.Sprintf("%.1f MB (%.1f)", r.rssIdle, r.rssIdleAnon)
	})
	row("deploys up to N", "succeed (or 503 naming the limit)", func(r *result) string { return r.bridgeNote })
	return sb.String()
}

// writeSection replaces the section name of the file path (between its
// markers) with text, appending the section when the file has none.
func writeSection(path, name, text string) error {
	begin, end := "<!-- bench:"+name+":begin -->", "<!-- bench:"+name+":end -->"
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	s := string(old)
	block := begin + "\n" + text + end
	if i, j := strings.Index(s, begin), strings.Index(s, end); i >= 0 && j > i {
		s = s[:i] + block + s[j+len(end):]
	} else {
		s = strings.TrimRight(s, "\n") + "\n\n" + block + "\n"
	}
	return os.WriteFile(path, []byte(s), 0o644)
}
