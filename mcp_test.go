package dtma

import (
	"errors"
	"testing"
)

// TestMCPLeavesOldSpecsAlone: a spec without mcp (or with "none") hashes,
// compares and diffs exactly as before the field existed.
func TestMCPLeavesOldSpecsAlone(t *testing.T) {
	s := Spec{Image: "img:1", Env: map[string]string{"A": "x"}, Ports: []Port{{ContainerPort: 80, Protocol: "tcp"}}}
	// The hash stored by the agent before mcp existed, for this spec.
	before := s.Hash()
	r := DeployRequest{Name: "n", Spec: s}
	r.Spec.MCP = MCP{Transport: "none"}
	r.Normalize()
	if r.Spec.MCP != (MCP{}) {
		t.Fatalf("none normalized to %+v, want the zero value", r.Spec.MCP)
	}
	if r.Spec.Hash() != before || !r.Spec.Equal(s) || len(s.Diff(r.Spec)) != 0 {
		t.Fatalf("an mcp of none changed the spec's identity")
	}
	st := s
	st.MCP = MCP{Transport: MCPStdio}
	if st.Hash() == before || st.Equal(s) {
		t.Fatalf("stdio did not change the spec's identity")
	}
	if d := s.Diff(st); len(d) != 1 || d[0] != "mcp" {
		t.Fatalf("diff = %v, want [mcp]", d)
	}
	tok := st
	tok.MCP.TokenHash = HashMCPToken("0123456789abcdef")
	if tok.Hash() != st.Hash() {
		t.Fatalf("the token hash went into the spec hash (labels are readable)")
	}
	if tok.Equal(st) {
		t.Fatalf("another token compares equal")
	}
	if d := st.Diff(tok); len(d) != 1 || d[0] != "mcp token differs" {
		t.Fatalf("diff = %v", d)
	}
	bp := tok
	bp.MCP.BridgePort = 31005
	if !bp.Equal(tok) || bp.Hash() != tok.Hash() || len(bp.Diff(tok)) != 0 {
		t.Fatalf("the bridge port (resolved state) changed the spec's identity")
	}
	if !CheckMCPToken(tok.MCP.TokenHash, "0123456789abcdef") || CheckMCPToken(tok.MCP.TokenHash, "0123456789abcdeX") {
		t.Fatalf("CheckMCPToken")
	}
}

func TestValidateMCP(t *testing.T) {
	for _, c := range []struct {
		mcp   MCP
		ports []Port
		field string // "" = valid
	}{
		{MCP{Transport: "stdio"}, nil, ""},
		{MCP{Transport: "STDIO"}, nil, ""},
		{MCP{Transport: "streamable-http", Path: "/mcp", Port: 8080}, []Port{{ContainerPort: 8080}}, ""},
		{MCP{Transport: "sse"}, nil, ""},
		{MCP{Transport: "websocket"}, nil, "mcp.transport"},
		{MCP{Transport: "stdio", Path: "/mcp"}, nil, "mcp.path"},
		{MCP{Transport: "stdio", Port: 1}, nil, "mcp.port"},
		{MCP{Transport: "none", Port: 1}, nil, "mcp.transport"},
		{MCP{Transport: "sse", Path: "mcp"}, nil, "mcp.path"},
		{MCP{Transport: "sse", Port: 8080}, []Port{{ContainerPort: 9090}}, "mcp.port"},
		{MCP{Transport: "sse", Port: 70000}, nil, "mcp.port"},
		{MCP{Transport: "sse", TokenHash: HashMCPToken("0123456789abcdef")}, nil, "mcp.token"},
	} {
		r := DeployRequest{Name: "n", Spec: Spec{Image: "img:1", Ports: c.ports, MCP: c.mcp}}
		r.Normalize()
		err := r.Validate()
		var e *Error
		switch {
		case c.field == "" && err != nil:
			t.Errorf("%+v: %v", c.mcp, err)
		case c.field != "" && (!errors.As(err, &e) || e.Field != c.field || e.Code != EINVALID):
			t.Errorf("%+v: err %v, want EINVALID on %s", c.mcp, err, c.field)
		}
	}
}

func TestStdioImages(t *testing.T) {
	s := StdioImages{"mcp/*", "ghcr.io/org/tool:1"}
	for img, want := range map[string]bool{"mcp/fetch:latest": true, "ghcr.io/org/tool:1": true, "ghcr.io/org/tool:2": false, "x/mcp/y": false} {
		if s.Match(img) != want {
			t.Errorf("Match(%q) = %v", img, !want)
		}
	}
}
