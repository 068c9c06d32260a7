package dtma_test

import (
	"regexp"
	"strings"
	"testing"

	"github.com/agentopia/dtma"
)

var dockerName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]+$`)

func TestContainerName(t *testing.T) {
	tests := []struct{ in, want string }{
		{"Context7 MCP Server-1750278276605", "dtma-context7-mcp-server-1750278276605"},
		{"simple", "dtma-simple"},
		{"  spaces  around ", "dtma-spaces-around"},
		{"a__b..c--d", "dtma-a__b..c--d"},
		{"Émoji 🚀 tool", "dtma-moji-tool"},
		{"---", ""}, // only separators: hashed
		{"🚀", ""},
	}
	for _, tt := range tests {
		got := dtma.ContainerName(tt.in)
		if tt.want != "" && got != tt.want {
			t.Errorf("ContainerName(%q) = %q, want %q", tt.in, got, tt.want)
		}
		if tt.want == "" && (!strings.HasPrefix(got, "dtma-") || len(got) != len("dtma-")+8) {
			t.Errorf("ContainerName(%q) = %q, want dtma-<8 hex>", tt.in, got)
		}
		if !dockerName.MatchString(got) {
			t.Errorf("ContainerName(%q) = %q is not a valid Docker name", tt.in, got)
		}
		if again := dtma.ContainerName(tt.in); again != got {
			t.Errorf("ContainerName(%q) not stable: %q then %q", tt.in, got, again)
		}
	}
}

func TestContainerNameLong(t *testing.T) {
	got := dtma.ContainerName(strings.Repeat("abc ", 100))
	if len(got) > 110 || !dockerName.MatchString(got) || strings.HasSuffix(got, "-") {
		t.Fatalf("long name gives %q (%d bytes)", got, len(got))
	}
}

func TestDisambiguatedContainerName(t *testing.T) {
	a := dtma.DisambiguatedContainerName("host-a", "My Tool")
	b := dtma.DisambiguatedContainerName("host-b", "My Tool")
	if a == b {
		t.Fatalf("different hosts give the same name %q", a)
	}
	if !strings.HasPrefix(a, "dtma-my-tool-") || !dockerName.MatchString(a) {
		t.Fatalf("got %q", a)
	}
	if a != dtma.DisambiguatedContainerName("host-a", "My Tool") {
		t.Fatal("not stable")
	}
	// Two names that slug alike are told apart.
	if dtma.DisambiguatedContainerName("h", "A B") == dtma.DisambiguatedContainerName("h", "a-b") {
		t.Fatal("names that slug alike collide")
	}
}
