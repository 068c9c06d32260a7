package docker_test

import (
	"os"
	"testing"

	"github.com/agentopia/dtma/internal/dockertest"
)

// TestMain sweeps the containers this run left on the daemon (see
// dockertest.Main).
func TestMain(m *testing.M) { os.Exit(dockertest.Main(m)) }
