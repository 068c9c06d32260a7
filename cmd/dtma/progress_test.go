package main

import (
	"bytes"
	"testing"

	"github.com/agentopia/dtma"
)

var testProgress = []dtma.PullProgress{
	{ID: "v1", Status: "Pulling from acme/tool"},
	{ID: "aaa", Status: "Pulling fs layer"},
	{ID: "bbb", Status: "Pulling fs layer"},
	{ID: "aaa", Status: "Downloading", Current: 1 << 20, Total: 4 << 20},
	{ID: "aaa", Status: "Downloading", Current: 2 << 20, Total: 4 << 20},
	{ID: "bbb", Status: "Download complete"},
	{ID: "aaa", Status: "Pull complete"},
	{ID: "bbb", Status: "Pull complete"},
	{Status: "Digest: sha256:0123"},
	{Status: "Status: Downloaded newer image for acme/tool:1"},
}

// Not a terminal: one line per status change of a layer (repeated
// "Downloading" messages are folded), no escapes.
func TestProgressPlain(t *testing.T) {
	var b bytes.Buffer
	p := newProgressPrinter(&b)
	for _, m := range testProgress {
		p.show(m)
	}
	golden(t, "progress-plain.golden", b.String())
}

// A terminal: every message redraws one line per layer in place, with a
// bar while bytes move.
func TestProgressTerminal(t *testing.T) {
	var b bytes.Buffer
	p := newProgressPrinter(&b)
	p.tty = true
	for _, m := range testProgress[:5] {
		p.show(m)
	}
	golden(t, "progress-tty.golden", b.String())
}
