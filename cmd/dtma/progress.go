package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/agentopia/dtma"
)

// progressPrinter shows a deploy's pull progress on the CLI's stderr: on a
// terminal one line per layer, redrawn in place with a bar; otherwise a
// plain line whenever a layer's (or the image's) status changes.
type progressPrinter struct {
	w      io.Writer
	tty    bool
	order  []string          // layer ids in order of appearance; "" = the image
	lines  map[string]string // id -> its current line
	status map[string]string // id -> last status printed (plain mode)
	drawn  int               // lines drawn by the last redraw (tty mode)
}

func newProgressPrinter(w io.Writer) *progressPrinter {
	return &progressPrinter{w: w, tty: isTerminal(w), lines: map[string]string{}, status: map[string]string{}}
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// show takes one progress message.
func (p *progressPrinter) show(m dtma.PullProgress) {
	if !p.tty {
		if p.status[m.ID] == m.Status && m.ID != "" {
			return
		}
		p.status[m.ID] = m.Status
		if m.ID != "" {
			fmt.Fprintf(p.w, "%s: %s\n", m.ID, m.Status)
		} else {
			fmt.Fprintln(p.w, m.Status)
		}
		return
	}
	if _, ok := p.lines[m.ID]; !ok {
		p.order = append(p.order, m.ID)
	}
	p.lines[m.ID] = progressLine(m)
	p.redraw()
}

// redraw moves the cursor up over the lines drawn before and draws every
// layer's line again.
func (p *progressPrinter) redraw() {
	var b strings.Builder
	if p.drawn > 0 {
		fmt.Fprintf(&b, "\x1b[%dA", p.drawn)
	}
	for _, id := range p.order {
		b.WriteString("\x1b[2K")
		b.WriteString(p.lines[id])
		b.WriteByte('\n')
	}
	p.drawn = len(p.order)
	io.WriteString(p.w, b.String())
}

// progressLine is "id: Status [=====>     ] 1.2MB/3.4MB".
func progressLine(m dtma.PullProgress) string {
	s := m.Status
	if m.ID != "" {
		s = m.ID + ": " + s
	}
	if m.Total > 0 && m.Current >= 0 {
		const width = 30
		n := int(float64(width) * float64(min(m.Current, m.Total)) / float64(m.Total))
		bar := strings.Repeat("=", n)
		if n < width {
			bar += ">" + strings.Repeat(" ", width-n-1)
		}
		s += fmt.Sprintf(" [%s] %s/%s", bar, humanBytes(m.Current), humanBytes(m.Total))
	}
	return s
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1fGB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1fMB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1fkB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%dB", n)
}
