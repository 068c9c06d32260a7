package main

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentopia/dtma"
	"github.com/spf13/cobra"
)

// runCLI runs the dtma command line with args and an environment that holds
// only env, and returns what it printed and the error main would report.
func runCLI(t *testing.T, env map[string]string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errw bytes.Buffer
	root := newRootCommand(&out, &errw, func(k string) string { return env[k] })
	root.SetArgs(args)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = root.ExecuteContext(ctx)
	return out.String(), errw.String(), err
}

// serveConfig parses args as `dtma serve` flags and loads the
// configuration with env as the environment, without serving.
func serveConfig(t *testing.T, env map[string]string, args ...string) (*config, error) {
	t.Helper()
	s := &streams{out: &bytes.Buffer{}, err: &bytes.Buffer{}, getenv: func(k string) string { return env[k] }}
	cmd := newServeCommand(s)
	if err := cmd.ParseFlags(args); err != nil {
		return nil, err // pflag's own error for a typed flag: it names the flag
	}
	return loadConfig(cmd, s)
}

func mustServeConfig(t *testing.T, env map[string]string, args ...string) *config {
	t.Helper()
	c, err := serveConfig(t, env, args...)
	if err != nil {
		t.Fatalf("loadConfig(%v): %v", args, err)
	}
	return c
}

// The registry policy and the adoption setting: loopback adoption and no
// registry exceptions by default; patterns from the environment.
func TestConfigHardening(t *testing.T) {
	c := mustServeConfig(t, nil)
	if c.Adopt != "loopback" || len(c.RegistryAllow) != 0 || len(c.RegistryDeny) != 0 {
		t.Errorf("defaults: adopt %q allow %v deny %v", c.Adopt, c.RegistryAllow, c.RegistryDeny)
	}
	c = mustServeConfig(t, map[string]string{"DTMA_ADOPT": "Off", "DTMA_REGISTRY_ALLOW": "127.0.0.1:5000, *.corp.example", "DTMA_REGISTRY_DENY": "10.0.0.0/8"})
	if c.Adopt != "off" || len(c.RegistryAllow) != 2 || c.RegistryAllow[1] != "*.corp.example" || len(c.RegistryDeny) != 1 {
		t.Errorf("from env: adopt %q allow %v deny %v", c.Adopt, c.RegistryAllow, c.RegistryDeny)
	}
}

func TestConfigDefaults(t *testing.T) {
	c := mustServeConfig(t, nil)
	if c.Listen != ":30000" {
		t.Errorf("Listen = %q, want :30000", c.Listen)
	}
	if c.DataDir != "/var/lib/dtma" {
		t.Errorf("DataDir = %q, want /var/lib/dtma", c.DataDir)
	}
	if c.PortRangeStart != 31000 || c.PortRangeEnd != 31999 {
		t.Errorf("port range = %d-%d, want 31000-31999", c.PortRangeStart, c.PortRangeEnd)
	}
	if c.ResyncInterval != 30*time.Second || c.StopTimeout != 10*time.Second {
		t.Errorf("resync %v stop %v, want 30s and 10s", c.ResyncInterval, c.StopTimeout)
	}
	if c.CrashRestarts != 5 || c.CrashWindow != 5*time.Minute {
		t.Errorf("crashloop %d in %v, want 5 in 5m", c.CrashRestarts, c.CrashWindow)
	}
	if c.RegistryURL != "" || c.RegistryMaxConn != 8 || c.RegistryConnTO != 5*time.Second || c.RegistryStmtTO != 5*time.Second {
		t.Errorf("registry settings = %q %d %v %v", c.RegistryURL, c.RegistryMaxConn, c.RegistryConnTO, c.RegistryStmtTO)
	}
	if c.PublicStatus || c.HeartbeatURL != "" || c.LogLevel != slog.LevelInfo || c.LogFormat != "json" {
		t.Errorf("public %v heartbeat %q level %v format %q", c.PublicStatus, c.HeartbeatURL, c.LogLevel, c.LogFormat)
	}
	if len(c.Tokens) != 0 {
		t.Errorf("Tokens = %d entries, want none", len(c.Tokens))
	}
}

// A flag on the command line wins over its environment variable, which
// wins over the default.
func TestConfigFlagBeatsEnv(t *testing.T) {
	env := map[string]string{
		"DTMA_LISTEN":          "127.0.0.1:4000",
		"DTMA_DATA_DIR":        "/env/data",
		"DTMA_HOST_ID":         "env-host",
		"DTMA_PORT_RANGE":      "40000-40009",
		"DTMA_RESYNC_INTERVAL": "7s",
		"DTMA_REGISTRY_URL":    "postgres://env/db",
		"DTMA_LOG_LEVEL":       "warn",
		"DTMA_DEFAULT_HOST_IP": "127.0.0.1",
	}
	c := mustServeConfig(t, env)
	if c.Listen != "127.0.0.1:4000" || c.DataDir != "/env/data" || c.HostID != "env-host" ||
		c.PortRangeStart != 40000 || c.PortRangeEnd != 40009 || c.ResyncInterval != 7*time.Second ||
		c.RegistryURL != "postgres://env/db" || c.LogLevel != slog.LevelWarn || c.DefaultHostIP != "127.0.0.1" {
		t.Fatalf("environment not applied: %+v", c)
	}
	c = mustServeConfig(t, env,
		"--listen", "127.0.0.1:5000", "--data-dir", "/flag/data", "--host-id", "flag-host",
		"--port-range", "50000-50001", "--resync-interval", "3s", "--registry-url", "sqlite:///x.db",
		"--log-level", "error", "--default-host-ip", "::1")
	if c.Listen != "127.0.0.1:5000" || c.DataDir != "/flag/data" || c.HostID != "flag-host" ||
		c.PortRangeStart != 50000 || c.PortRangeEnd != 50001 || c.ResyncInterval != 3*time.Second ||
		c.RegistryURL != "sqlite:///x.db" || c.LogLevel != slog.LevelError || c.DefaultHostIP != "::1" {
		t.Fatalf("flags did not win over the environment: %+v", c)
	}
}

// PORT (the platform's variable) sets the listen port when DTMA_LISTEN is
// unset; DTMA_LISTEN and --listen win over it.
func TestConfigPORT(t *testing.T) {
	if c := mustServeConfig(t, map[string]string{"PORT": "8088"}); c.Listen != ":8088" {
		t.Errorf("PORT=8088: Listen = %q, want :8088", c.Listen)
	}
	if c := mustServeConfig(t, map[string]string{"PORT": "8088", "DTMA_LISTEN": "127.0.0.1:9000"}); c.Listen != "127.0.0.1:9000" {
		t.Errorf("DTMA_LISTEN and PORT: Listen = %q, want DTMA_LISTEN's 127.0.0.1:9000", c.Listen)
	}
	if c := mustServeConfig(t, map[string]string{"PORT": "8088"}, "--listen", ":7000"); c.Listen != ":7000" {
		t.Errorf("--listen and PORT: Listen = %q, want :7000", c.Listen)
	}
	if _, err := serveConfig(t, map[string]string{"PORT": "80:80"}); err == nil || !strings.Contains(err.Error(), "--listen") {
		t.Errorf("PORT=80:80: err = %v, want one naming --listen", err)
	}
}

// Every bad value is reported, each naming its flag, whether it came from
// the command line or the environment.
func TestConfigBadValuesNameTheFlag(t *testing.T) {
	cases := []struct {
		flag string
		env  map[string]string
		args []string
	}{
		{"--listen", nil, []string{"--listen", "nonsense"}},
		{"--resync-interval", nil, []string{"--resync-interval", "often"}},
		{"--resync-interval", map[string]string{"DTMA_RESYNC_INTERVAL": "-5s"}, nil},
		{"--stop-timeout", map[string]string{"DTMA_STOP_TIMEOUT": "0s"}, nil},
		{"--crashloop-restarts", nil, []string{"--crashloop-restarts", "many"}},
		{"--crashloop-window", nil, []string{"--crashloop-window", "5"}},
		{"--port-range", map[string]string{"DTMA_PORT_RANGE": "32000"}, nil},
		{"--port-range", nil, []string{"--port-range", "2000-1000"}},
		{"--port-range", nil, []string{"--port-range", "1-70000"}},
		{"--default-host-ip", nil, []string{"--default-host-ip", "localhost"}},
		{"--container-labels", nil, []string{"--container-labels", "novalue"}},
		{"--container-labels", map[string]string{"DTMA_CONTAINER_LABELS": "team=a,dtma.host=evil"}, nil},
		{"--registry-max-conns", map[string]string{"DTMA_REGISTRY_MAX_CONNS": "0"}, nil},
		{"--registry-connect-timeout", nil, []string{"--registry-connect-timeout", "soon"}},
		{"--registry-statement-timeout", map[string]string{"DTMA_REGISTRY_STATEMENT_TIMEOUT": "x"}, nil},
		{"--heartbeat-interval", nil, []string{"--heartbeat-interval", "1 minute"}},
		{"--log-level", map[string]string{"DTMA_LOG_LEVEL": "chatty"}, nil},
		{"--log-format", nil, []string{"--log-format", "xml"}},
		{"--token-file", nil, []string{"--token-file", filepath.Join(t.TempDir(), "missing")}},
		{"--public-status", map[string]string{"DTMA_PUBLIC_STATUS": "yes"}, nil},
		{"--public-status", nil, []string{"--public-status=on"}},
		{"--heartbeat-runtime-details", map[string]string{"DTMA_HEARTBEAT_RUNTIME_DETAILS": "y"}, nil},
		{"--legacy-port-conflict", map[string]string{"DTMA_LEGACY_PORT_CONFLICT": "ignore"}, nil},
		{"--registry-allow", map[string]string{"DTMA_REGISTRY_ALLOW": "http://127.0.0.1:5000"}, nil},
		{"--registry-deny", nil, []string{"--registry-deny", "10.0.0.0/99"}},
		{"--adopt", map[string]string{"DTMA_ADOPT": "yes"}, nil},
		{"--default-memory", map[string]string{"DTMA_DEFAULT_MEMORY": "lots"}, nil},
		{"--default-memory", nil, []string{"--default-memory", "1m"}},
		{"--default-pids", map[string]string{"DTMA_DEFAULT_PIDS": "5"}, nil},
		{"--default-cpus", nil, []string{"--default-cpus", "-1"}},
		{"--max-memory", map[string]string{"DTMA_MAX_MEMORY": "1.5g"}, nil},
		{"--max-pids", nil, []string{"--max-pids", "x"}},
		{"--max-cpus", map[string]string{"DTMA_MAX_CPUS": "0.001"}, nil},
		{"--policy-file", nil, []string{"--policy-file", filepath.Join(t.TempDir(), "missing.json")}},
		{"--network", map[string]string{"DTMA_NETWORK": "host"}, nil},
		{"--network-shard-size", nil, []string{"--network-shard-size", "1023"}},
		{"--network-shard-size", map[string]string{"DTMA_NETWORK_SHARD_SIZE": "0"}, nil},
		{"--network-subnets", nil, []string{"--network-subnets", "10.213.0.0"}},
		{"--network-subnets", map[string]string{"DTMA_NETWORK_SUBNETS": "10.213.0.0/24"}, nil}, // smaller than a /22 shard
		{"--network-subnets", nil, []string{"--network-subnets", "fd00::/48"}},
	}
	for _, tc := range cases {
		_, err := serveConfig(t, tc.env, tc.args...)
		if err == nil {
			t.Errorf("env %v args %v: no error, want one naming %s", tc.env, tc.args, tc.flag)
			continue
		}
		if !strings.Contains(err.Error(), tc.flag+":") && !strings.Contains(err.Error(), `"`+tc.flag+`" flag`) {
			t.Errorf("env %v args %v: error %q does not name %s", tc.env, tc.args, err, tc.flag)
		}
		for k := range tc.env {
			if !strings.Contains(err.Error(), "set by "+k) {
				t.Errorf("env %v: error %q does not name the variable %s", tc.env, err, k)
			}
		}
	}

	// Several bad values: all of them are reported at once.
	_, err := serveConfig(t, map[string]string{"DTMA_STOP_TIMEOUT": "x"}, "--port-range", "a-b", "--log-format", "xml")
	if err == nil {
		t.Fatal("three bad values: no error")
	}
	for _, f := range []string{"--stop-timeout:", "--port-range:", "--log-format:"} {
		if !strings.Contains(err.Error(), f) {
			t.Errorf("error %q does not report %s", err, f)
		}
	}
}

// The confinement settings: defaults sized for MCP servers, a ceiling of
// the machine's CPUs, isolation on; each can be set; a policy file is
// read and checked at start.
func TestConfigConfinement(t *testing.T) {
	c := mustServeConfig(t, nil)
	if c.DefaultLimits != (dtma.Limits{Memory: 512 << 20, PIDs: 256, MilliCPUs: 1000}) {
		t.Errorf("default limits %+v, want 512m, 256 pids, 1 cpu", c.DefaultLimits)
	}
	if c.MaxLimits != (dtma.Limits{Memory: 4 << 30, PIDs: 4096, MilliCPUs: int64(runtime.NumCPU()) * 1000}) {
		t.Errorf("max limits %+v", c.MaxLimits)
	}
	if c.Network != "isolated" || c.NetworkShardSize != 1000 || c.NetworkSubnets != "" || c.Policy != nil {
		t.Errorf("network %q shard %d subnets %q policy %v", c.Network, c.NetworkShardSize, c.NetworkSubnets, c.Policy)
	}
	policy := filepath.Join(t.TempDir(), "policy.json")
	if err := os.WriteFile(policy, []byte(`{"images": [{"pattern": "ghcr.io/org/*", "cap_add": ["NET_BIND_SERVICE"]}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	c = mustServeConfig(t, map[string]string{"DTMA_DEFAULT_MEMORY": "0", "DTMA_DEFAULT_CPUS": "0.5", "DTMA_MAX_CPUS": "0",
		"DTMA_POLICY_FILE": policy, "DTMA_NETWORK": "bridge", "DTMA_NETWORK_SHARD_SIZE": "2", "DTMA_NETWORK_SUBNETS": "10.213.0.0/16"})
	if c.DefaultLimits != (dtma.Limits{PIDs: 256, MilliCPUs: 500}) || c.MaxLimits.MilliCPUs != 0 || c.Network != "bridge" ||
		c.NetworkShardSize != 2 || c.NetworkSubnets != "10.213.0.0/16" || c.Policy.Match("ghcr.io/org/x:1") == nil {
		t.Errorf("set: %+v", c)
	}
	if err := os.WriteFile(policy, []byte(`{"images": [{"pattern": "*", "privileged": true}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := serveConfig(t, map[string]string{"DTMA_POLICY_FILE": policy}); err == nil || !strings.Contains(err.Error(), "--policy-file:") {
		t.Errorf("policy granting privileged mode: %v, want an error naming --policy-file", err)
	}
}

func TestConfigContainerLabels(t *testing.T) {
	c := mustServeConfig(t, map[string]string{"DTMA_CONTAINER_LABELS": " team=tools , env=prod,empty= "})
	want := map[string]string{"team": "tools", "env": "prod", "empty": ""}
	if len(c.ContainerLabels) != len(want) {
		t.Fatalf("labels = %v, want %v", c.ContainerLabels, want)
	}
	for k, v := range want {
		if got, ok := c.ContainerLabels[k]; !ok || got != v {
			t.Errorf("label %s = %q (present %v), want %q", k, got, ok, v)
		}
	}
}

// Tokens come from DTMA_BEARER_TOKEN, BACKEND_TO_DTMA_API_KEY and the
// token file (one per line; blank lines and # comments skipped).
func TestConfigTokens(t *testing.T) {
	file := filepath.Join(t.TempDir(), "tokens")
	content := "# rotated monthly\n\n  file-token-one  \nfile-token-two\n#old-token\n"
	if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"DTMA_BEARER_TOKEN":       "env-token",
		"BACKEND_TO_DTMA_API_KEY": "backend-token",
		"DTMA_TOKEN_FILE":         file,
	}
	c := mustServeConfig(t, env)
	want := []string{"env-token", "backend-token", "file-token-one", "file-token-two"}
	if !slices.Equal(c.Tokens, want) {
		t.Errorf("Tokens = %q, want %q", c.Tokens, want)
	}

	// --token-file beats DTMA_TOKEN_FILE.
	other := filepath.Join(t.TempDir(), "other")
	if err := os.WriteFile(other, []byte("flag-file-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c = mustServeConfig(t, map[string]string{"DTMA_TOKEN_FILE": file}, "--token-file", other)
	if !slices.Equal(c.Tokens, []string{"flag-file-token"}) {
		t.Errorf("with --token-file: Tokens = %q, want [flag-file-token]", c.Tokens)
	}
}

// serve refuses to start without a token, before opening anything; the
// message says how to set one.
func TestServeWithoutToken(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	_, _, err := runCLI(t, map[string]string{"DTMA_DATA_DIR": dataDir, "DTMA_LISTEN": "127.0.0.1:0"}, "serve")
	if err == nil {
		t.Fatal("serve without a token: no error")
	}
	if !strings.Contains(err.Error(), "no bearer token") || !strings.Contains(err.Error(), "DTMA_BEARER_TOKEN") {
		t.Errorf("error %q does not say how to configure a token", err)
	}
	if _, statErr := os.Stat(dataDir); !os.IsNotExist(statErr) {
		t.Errorf("serve without a token touched the data dir (stat: %v)", statErr)
	}

	// A token file holding only comments gives no token either.
	file := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(file, []byte("# none yet\n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err = runCLI(t, map[string]string{"DTMA_DATA_DIR": dataDir, "DTMA_LISTEN": "127.0.0.1:0"}, "serve", "--token-file", file)
	if err == nil || !strings.Contains(err.Error(), "no bearer token") {
		t.Errorf("serve with an empty token file: err = %v, want no bearer token", err)
	}

	// A bad setting is reported before the missing token, naming the flag.
	_, _, err = runCLI(t, map[string]string{"DTMA_DATA_DIR": dataDir}, "serve", "--listen", "bad")
	if err == nil || !strings.Contains(err.Error(), "--listen:") {
		t.Errorf("serve --listen bad: err = %v, want one naming --listen", err)
	}
}

// The client commands need DTMA_TOKEN (or DTMA_BEARER_TOKEN) and take the
// agent URL from --url, then DTMA_URL.
func TestClientConfig(t *testing.T) {
	newCmd := func() *cobra.Command {
		cmd := &cobra.Command{Use: "x"}
		addClientFlags(cmd)
		return cmd
	}
	streamsWith := func(env map[string]string) *streams {
		return &streams{out: &bytes.Buffer{}, err: &bytes.Buffer{}, getenv: func(k string) string { return env[k] }}
	}

	_, err := newAPIClient(newCmd(), streamsWith(map[string]string{"DTMA_URL": "http://127.0.0.1:1"}))
	if err == nil || !strings.Contains(err.Error(), "DTMA_TOKEN") {
		t.Errorf("no token: err = %v, want one naming DTMA_TOKEN", err)
	}

	c, err := newAPIClient(newCmd(), streamsWith(map[string]string{"DTMA_BEARER_TOKEN": "bearer"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Token != "bearer" || c.BaseURL != "http://127.0.0.1:30000" {
		t.Errorf("fallbacks: token %q base %q, want DTMA_BEARER_TOKEN and the default URL", c.Token, c.BaseURL)
	}

	c, err = newAPIClient(newCmd(), streamsWith(map[string]string{"DTMA_TOKEN": "tok", "DTMA_BEARER_TOKEN": "bearer", "DTMA_URL": "http://127.0.0.1:4000/"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Token != "tok" || c.BaseURL != "http://127.0.0.1:4000" {
		t.Errorf("env: token %q base %q, want DTMA_TOKEN and DTMA_URL without its trailing slash", c.Token, c.BaseURL)
	}

	cmd := newCmd()
	if err := cmd.ParseFlags([]string{"--url", "http://127.0.0.1:5000"}); err != nil {
		t.Fatal(err)
	}
	c, err = newAPIClient(cmd, streamsWith(map[string]string{"DTMA_TOKEN": "tok", "DTMA_URL": "http://127.0.0.1:4000"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.BaseURL != "http://127.0.0.1:5000" {
		t.Errorf("--url and DTMA_URL: base %q, want --url's", c.BaseURL)
	}

	// Through the real command: `dtma ls` without a token fails before
	// sending anything.
	_, _, err = runCLI(t, map[string]string{"DTMA_URL": "http://127.0.0.1:1"}, "ls")
	if err == nil || !strings.Contains(err.Error(), "no token") {
		t.Errorf("dtma ls without a token: err = %v", err)
	}
}

// The host id is taken from the settings, or generated once and kept in
// the data dir.
func TestResolveHostID(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	id1, err := resolveHostID(&config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(id1, "host-") {
		t.Errorf("generated host id %q, want host-...", id1)
	}
	id2, err := resolveHostID(&config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if id1 != id2 {
		t.Errorf("host id changed between runs: %q then %q", id1, id2)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "host-id")); err != nil || strings.TrimSpace(string(b)) != id1 {
		t.Errorf("stored host id = %q, %v; want %q", b, err, id1)
	}
	if id, err := resolveHostID(&config{DataDir: dir, HostID: "explicit"}); err != nil || id != "explicit" {
		t.Errorf("explicit host id: %q, %v", id, err)
	}
	for _, bad := range []string{"has space", "a,b", "k=v", strings.Repeat("x", 129)} {
		if _, err := resolveHostID(&config{DataDir: dir, HostID: bad}); err == nil || !strings.Contains(err.Error(), "--host-id") {
			t.Errorf("host id %q: err = %v, want one naming --host-id", bad, err)
		}
	}
}

// TestSettingsAreTypedFlags: every setting is a flag of its type with its
// environment variables attached and listed in `dtma serve --help`; a
// typed value from the environment is parsed by the flag's own type and
// the error names the variable.
func TestSettingsAreTypedFlags(t *testing.T) {
	s := &streams{out: &bytes.Buffer{}, err: &bytes.Buffer{}, getenv: func(string) string { return "" }}
	cmd := newServeCommand(s)
	help := cmd.Flags().FlagUsages()
	for _, st := range serveSettings {
		f := cmd.Flags().Lookup(st.flag)
		if f == nil {
			t.Errorf("setting %s has no flag", st.flag)
			continue
		}
		want := map[settingKind]string{kindString: "string", kindBool: "bool", kindDuration: "duration", kindInt: "int"}[st.kind]
		if f.Value.Type() != want {
			t.Errorf("--%s is a %s flag, want %s", st.flag, f.Value.Type(), want)
		}
		if got := f.Annotations[envAnnotation]; !slices.Equal(got, st.env) {
			t.Errorf("--%s carries env %v, want %v", st.flag, got, st.env)
		}
		for _, e := range st.env {
			if !strings.Contains(help, e) {
				t.Errorf("serve --help does not list %s", e)
			}
		}
	}
	_, err := serveConfig(t, map[string]string{"DTMA_STOP_TIMEOUT": "10 seconds"})
	if err == nil || !strings.Contains(err.Error(), "DTMA_STOP_TIMEOUT") || !strings.Contains(err.Error(), "invalid duration") {
		t.Errorf("DTMA_STOP_TIMEOUT=10 seconds: %v, want the duration parser's error naming the variable", err)
	}
}
