package mcpbridge

import (
	"context"
	"io"
	"net"
	"strconv"
	"sync"

	"github.com/agentopia/dtma"
)

// Host runs one Bridge per stdio instance for the agent: it implements
// dtma.MCPBridges over a dtma.Runtime's Attach.
type Host struct {
	rt   dtma.Runtime
	base Config // Logger, AllowedOrigins, MaxMessageBytes, SessionIdle
	ctx  context.Context

	mu      sync.Mutex
	bridges map[string]*hosted // by instance id
}

type hosted struct {
	b      *Bridge
	addr   string
	cancel context.CancelFunc
	done   chan struct{}

	mu          sync.Mutex
	containerID string
}

var _ dtma.MCPBridges = (*Host)(nil)

// NewHost returns a Host whose bridges attach through rt and live until ctx
// ends. base gives every bridge its Logger, AllowedOrigins, MaxMessageBytes
// and SessionIdle.
func NewHost(ctx context.Context, rt dtma.Runtime, base Config) *Host {
	return &Host{rt: rt, base: base, ctx: ctx, bridges: map[string]*hosted{}}
}

// Ensure implements dtma.MCPBridges: it starts the instance's bridge on
// t.HostIP:t.Port (restarting it when the address or token changed),
// or points a running one at t.ContainerID and asks it to attach now.
// EUNAVAILABLE when the port cannot be listened on.
func (h *Host) Ensure(ctx context.Context, t dtma.MCPBridgeTarget) error {
	addr := net.JoinHostPort(t.HostIP, strconv.Itoa(t.Port))
	h.mu.Lock()
	defer h.mu.Unlock()
	if cur, ok := h.bridges[t.InstanceID]; ok {
		if cur.addr == addr && cur.b.cfg.TokenHash == t.TokenHash {
			cur.mu.Lock()
			cur.containerID = t.ContainerID
			cur.mu.Unlock()
			cur.b.Reattach()
			return nil
		}
		h.stopLocked(t.InstanceID)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return dtma.Errorf(dtma.EUNAVAILABLE, "mcp bridge of %s: listen on %s: %v", t.Name, addr, err)
	}
	hb := &hosted{addr: addr, containerID: t.ContainerID, done: make(chan struct{})}
	cfg := h.base
	cfg.Instance = t.Name
	cfg.TokenHash = t.TokenHash
	cfg.Attach = func(ctx context.Context) (io.ReadWriteCloser, error) {
		hb.mu.Lock()
		id := hb.containerID
		hb.mu.Unlock()
		return h.rt.Attach(ctx, id, nil) // stderr stays in the container's logs
	}
	hb.b = New(cfg)
	bctx, cancel := context.WithCancel(h.ctx)
	hb.cancel = cancel
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); hb.b.Run(bctx) }()
	go func() {
		defer wg.Done()
		if err := hb.b.Serve(bctx, ln); err != nil {
			hb.b.log.Error("mcp bridge listener failed", "addr", addr, "err", err)
		}
	}()
	go func() { wg.Wait(); close(hb.done) }()
	h.bridges[t.InstanceID] = hb
	return nil
}

// Stop implements dtma.MCPBridges; it returns once the listener is closed.
func (h *Host) Stop(instanceID string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.stopLocked(instanceID)
}

func (h *Host) stopLocked(instanceID string) {
	hb, ok := h.bridges[instanceID]
	if !ok {
		return
	}
	delete(h.bridges, instanceID)
	hb.cancel()
	<-hb.done
}

// Status implements dtma.MCPBridges.
func (h *Host) Status(instanceID string) (dtma.MCPBridgeStatus, bool) {
	h.mu.Lock()
	hb, ok := h.bridges[instanceID]
	h.mu.Unlock()
	if !ok {
		return dtma.MCPBridgeStatus{}, false
	}
	s := hb.b.Stats()
	_, port, _ := net.SplitHostPort(hb.addr)
	p, _ := strconv.Atoi(port)
	return dtma.MCPBridgeStatus{
		Port: p, Attached: s.Attached, Sessions: s.Sessions, Attaches: s.Attaches,
		MessagesIn: s.MessagesIn, MessagesOut: s.MessagesOut, BytesIn: s.BytesIn, BytesOut: s.BytesOut,
		SkippedLines: s.SkippedLines, Errors: s.Errors, LastError: s.LastError,
	}, true
}

// Close stops every bridge.
func (h *Host) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for id := range h.bridges {
		h.stopLocked(id)
	}
}
