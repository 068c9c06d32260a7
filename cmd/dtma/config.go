package main

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/agentopia/dtma"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// config is everything `dtma serve` (and the registry commands) read from
// flags and the environment. A flag set on the command line wins over its
// environment variable, which wins over the default.
type config struct {
	Listen          string
	DataDir         string
	HostID          string
	Tokens          []string
	PublicStatus    bool
	UI              bool
	LegacyPorts     dtma.PortConflictPolicy
	PortRangeStart  int
	PortRangeEnd    int
	DockerHost      string
	DockerConfig    string // Docker config.json with registry credentials
	DefaultHostIP   string
	RegistryURL     string
	RegistryMaxConn int32
	RegistryConnTO  time.Duration
	RegistryStmtTO  time.Duration
	ResyncInterval  time.Duration
	StopTimeout     time.Duration
	CrashRestarts   int
	CrashWindow     time.Duration
	ContainerLabels map[string]string
	HeartbeatURL    string
	HeartbeatEvery  time.Duration
	HeartbeatRTD    bool
	LogLevel        slog.Level
	LogFormat       string
	RegistryAllow   []string         // registry host patterns allowed despite being internal
	RegistryDeny    []string         // registry host patterns always refused
	Adopt           string           // who may call POST /v1/adopt: loopback, off or any
	StdioImages     dtma.StdioImages // image patterns deployed as stdio MCP servers by default
	MCPOrigins      []string         // Origin values the stdio bridges accept besides localhost

	// The HTTP listener's hardening (serve only).
	TLSCertFile, TLSKeyFile string        // both or neither
	HTTPReadTimeout         time.Duration // headers and body of one request
	MaxConnections          int           // served at once
	AuthFailureLimit        int           // per source and minute; 0 = off

	// Health checks and the event stream (issue 9).
	HealthConcurrency int // probes in flight at once
	EventBuffer       int // events kept for Last-Event-ID

	// Tool confinement (see docs/SECURITY.md).
	DefaultLimits    dtma.Limits
	MaxLimits        dtma.Limits
	Policy           *dtma.Policy
	Network          string
	NetworkShardSize int
	NetworkSubnets   string
}

// setting describes one configuration item: its flag, of its kind, and
// the environment variables that set it when the flag is not given (the
// first non-empty one wins). The variables are attached to the flag
// (annotation envAnnotation) and listed in its help.
type setting struct {
	flag, def, usage string
	env              []string
	kind             settingKind
}

// settingKind is the type of a setting's flag: pflag parses and checks a
// typed value, on the command line and from the environment alike.
type settingKind int

const (
	kindString settingKind = iota
	kindBool
	kindDuration
	kindInt
)

// envAnnotation is the flag annotation holding a setting's environment
// variables.
const envAnnotation = "dtma_env"

var serveSettings = []setting{
	{"listen", ":30000", "address to listen on", []string{"DTMA_LISTEN", "PORT"}, kindString},
	{"data-dir", "/var/lib/dtma", "data directory (SQLite registry, host id)", []string{"DTMA_DATA_DIR"}, kindString},
	{"host-id", "", "this agent's host id (default: generated once, stored in the data dir)", []string{"DTMA_HOST_ID"}, kindString},
	{"token-file", "", "file holding accepted bearer tokens, one per line", []string{"DTMA_TOKEN_FILE"}, kindString},
	{"public-status", "false", "serve GET /status without a token (legacy behaviour; true or false)", []string{"DTMA_PUBLIC_STATUS"}, kindBool},
	{"ui", "true", "serve the web dashboard at /ui/ (true or false)", []string{"DTMA_UI"}, kindBool},
	{"legacy-port-conflict", "remap", "POST /tools asking for a host port it cannot have (the agent's own, another instance's, one in use): remap (publish on a port from --port-range) or reject (409)", []string{"DTMA_LEGACY_PORT_CONFLICT"}, kindString},
	{"port-range", "31000-31999", "host ports allocated for host_port 0", []string{"DTMA_PORT_RANGE"}, kindString},
	{"docker-host", "", "Docker daemon address (default: DOCKER_HOST or the local socket)", []string{"DOCKER_HOST"}, kindString},
	{"docker-config", "", "Docker config.json whose credentials (auths, credHelpers, credsStore) pull private images (default: none)", []string{"DTMA_DOCKER_CONFIG"}, kindString},
	{"default-host-ip", "", "host address ports without host_ip are published on (default: all interfaces)", []string{"DTMA_DEFAULT_HOST_IP"}, kindString},
	{"registry-url", "", "registry: postgres://... or sqlite:///path (default: SQLite in the data dir)", []string{"DTMA_REGISTRY_URL"}, kindString},
	{"registry-max-conns", "8", "PostgreSQL pool size", []string{"DTMA_REGISTRY_MAX_CONNS"}, kindInt},
	{"registry-connect-timeout", "5s", "PostgreSQL connect timeout", []string{"DTMA_REGISTRY_CONNECT_TIMEOUT"}, kindDuration},
	{"registry-statement-timeout", "5s", "PostgreSQL statement timeout", []string{"DTMA_REGISTRY_STATEMENT_TIMEOUT"}, kindDuration},
	{"resync-interval", "30s", "relist this host's containers every", []string{"DTMA_RESYNC_INTERVAL"}, kindDuration},
	{"stop-timeout", "10s", "graceful stop timeout", []string{"DTMA_STOP_TIMEOUT"}, kindDuration},
	{"crashloop-restarts", "5", "restarts within the window that mark an instance crashloop", []string{"DTMA_CRASHLOOP_RESTARTS"}, kindInt},
	{"crashloop-window", "5m", "crash-loop window", []string{"DTMA_CRASHLOOP_WINDOW"}, kindDuration},
	{"container-labels", "", "extra labels for every container, k=v,k=v", []string{"DTMA_CONTAINER_LABELS"}, kindString},
	{"heartbeat-url", "", "backend base URL for the heartbeat (POST <url>/heartbeat); empty disables it", []string{"AGENTOPIA_API_BASE_URL"}, kindString},
	{"heartbeat-interval", "60s", "heartbeat period", []string{"DTMA_HEARTBEAT_INTERVAL"}, kindDuration},
	{"heartbeat-runtime-details", "false", "send runtime_details in heartbeats (only for a backend that still has that column; true or false)", []string{"DTMA_HEARTBEAT_RUNTIME_DETAILS"}, kindBool},
	{"stdio-images", "", "image patterns (* = any run of characters) deployed as stdio MCP servers, bridged to Streamable HTTP, when the deploy declares no mcp transport (every legacy deploy), comma-separated", []string{"DTMA_STDIO_IMAGES"}, kindString},
	{"mcp-allowed-origins", "", "Origin header values the stdio bridges accept besides none and localhost, comma-separated", []string{"DTMA_MCP_ALLOWED_ORIGINS"}, kindString},
	{"registry-allow", "", "image registry hosts allowed although loopback/private: host, host:port, *.domain or CIDR, comma-separated", []string{"DTMA_REGISTRY_ALLOW"}, kindString},
	{"registry-deny", "", "image registry hosts always refused (same patterns; wins over allow)", []string{"DTMA_REGISTRY_DENY"}, kindString},
	{"adopt", "loopback", "who may call POST /v1/adopt (dtma migrate): loopback, off or any", []string{"DTMA_ADOPT"}, kindString},
	{"default-memory", "512m", "memory limit of tool containers whose deploy sets none (0: no limit)", []string{"DTMA_DEFAULT_MEMORY"}, kindString},
	{"default-pids", "256", "PIDs limit of tool containers whose deploy sets none (0: no limit)", []string{"DTMA_DEFAULT_PIDS"}, kindString},
	{"default-cpus", "1", "CPU limit of tool containers whose deploy sets none (0: no limit)", []string{"DTMA_DEFAULT_CPUS"}, kindString},
	{"max-memory", "4g", "most memory a v1 deploy may ask for (0: no ceiling)", []string{"DTMA_MAX_MEMORY"}, kindString},
	{"max-pids", "4096", "most PIDs a v1 deploy may ask for (0: no ceiling)", []string{"DTMA_MAX_PIDS"}, kindString},
	{"max-cpus", "", "most CPUs a v1 deploy may ask for (default: this machine's CPUs; 0: no ceiling)", []string{"DTMA_MAX_CPUS"}, kindString},
	{"policy-file", "", "JSON policy granting images matching a pattern more capabilities or other limits", []string{"DTMA_POLICY_FILE"}, kindString},
	{"network", "isolated", "isolated (DTMA-owned bridge networks, inter-container traffic off) or bridge (Docker's default bridge)", []string{"DTMA_NETWORK"}, kindString},
	{"network-shard-size", "1000", "containers per isolated network before the next one is made (at most 1020)", []string{"DTMA_NETWORK_SHARD_SIZE"}, kindInt},
	{"network-subnets", "", "IPv4 pool the isolated networks' subnets are cut from, e.g. 10.213.0.0/16 (default: Docker's address pools)", []string{"DTMA_NETWORK_SUBNETS"}, kindString},
	{"log-level", "info", "debug, info, warn or error", []string{"DTMA_LOG_LEVEL"}, kindString},
	{"log-format", "json", "json or text", []string{"DTMA_LOG_FORMAT"}, kindString},
	{"tls-cert-file", "", "serve HTTPS with this PEM certificate (with --tls-key-file; reloaded on SIGHUP)", []string{"DTMA_TLS_CERT_FILE"}, kindString},
	{"tls-key-file", "", "PEM private key for --tls-cert-file", []string{"DTMA_TLS_KEY_FILE"}, kindString},
	{"http-read-timeout", "30s", "time a client has to send one request's headers and body", []string{"DTMA_HTTP_READ_TIMEOUT"}, kindDuration},
	{"max-connections", "1024", "HTTP connections served at once (more wait in the backlog)", []string{"DTMA_MAX_CONNECTIONS"}, kindInt},
	{"auth-failure-limit", "10", "failed authentications per source address and minute before 429 (0: no limit)", []string{"DTMA_AUTH_FAILURE_LIMIT"}, kindInt},
	{"health-concurrency", "32", "health probes in flight at once (more wait for a slot; each probe's timeout starts with its slot)", []string{"DTMA_HEALTH_CONCURRENCY"}, kindInt},
	{"event-buffer", "1024", "instance events kept for GET /v1/events resumption (Last-Event-ID); older ids get a resync event", []string{"DTMA_EVENT_BUFFER"}, kindInt},
}

// registrySettings are the subset the registry commands use.
var registrySettings = []string{"data-dir", "host-id", "registry-url", "registry-max-conns", "registry-connect-timeout", "registry-statement-timeout", "log-level", "log-format"}

// addSettings registers the named settings (all when none are named) as
// typed flags with their environment variables attached.
func addSettings(fs *pflag.FlagSet, names ...string) {
	for _, st := range serveSettings {
		if len(names) > 0 && !contains(names, st.flag) {
			continue
		}
		usage := st.usage + " (env " + strings.Join(st.env, ", ") + ")"
		switch st.kind {
		case kindBool:
			b, _ := strconv.ParseBool(st.def)
			fs.Bool(st.flag, b, usage)
		case kindDuration:
			d, _ := time.ParseDuration(st.def)
			fs.Duration(st.flag, d, usage)
		case kindInt:
			n, _ := strconv.Atoi(st.def)
			fs.Int(st.flag, n, usage)
		default:
			fs.String(st.flag, st.def, usage)
		}
		_ = fs.SetAnnotation(st.flag, envAnnotation, st.env)
	}
}

// applyEnv sets every setting flag not given on the command line from the
// first non-empty environment variable attached to it. The flag's own type
// parses the value; a value it cannot parse is reported through bad,
// naming the variable, and the flag keeps its default.
func applyEnv(cmd *cobra.Command, s *streams, bad func(name, why string)) {
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if f.Changed {
			return
		}
		for _, e := range f.Annotations[envAnnotation] {
			v := s.getenv(e)
			if v == "" {
				continue
			}
			if e == "PORT" {
				v = ":" + v
			}
			if err := f.Value.Set(strings.TrimSpace(v)); err != nil {
				bad(f.Name, fmt.Sprintf("invalid %s value %q: %v", f.Value.Type(), v, err))
			}
			return
		}
	})
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// value returns the setting's value: the flag's, which applyEnv has
// filled from the environment when the command line did not set it.
func value(cmd *cobra.Command, s *streams, name string) string {
	if f := cmd.Flags().Lookup(name); f != nil {
		return f.Value.String()
	}
	return ""
}

// origin returns the environment variable that gave setting name its
// value, or "" when it came from the command line or the default.
func origin(cmd *cobra.Command, s *streams, name string) string {
	if f := cmd.Flags().Lookup(name); f != nil && f.Changed {
		return ""
	}
	for _, st := range serveSettings {
		if st.flag != name {
			continue
		}
		for _, e := range st.env {
			if s.getenv(e) != "" {
				return e
			}
		}
	}
	return ""
}

// loadConfig reads the settings registered on cmd. Errors name the flag
// and, when the value came from there, its environment variable.
func loadConfig(cmd *cobra.Command, s *streams) (*config, error) {
	c := &config{}
	var errs []string
	bad := func(name, why string) {
		msg := fmt.Sprintf("--%s: %s", name, why)
		if e := origin(cmd, s, name); e != "" {
			msg += " (set by " + e + ")"
		}
		errs = append(errs, msg)
	}
	has := func(name string) bool { return cmd.Flags().Lookup(name) != nil }
	applyEnv(cmd, s, bad)
	boolean := func(name string) bool {
		b, _ := cmd.Flags().GetBool(name)
		return b
	}
	dur := func(name string) time.Duration {
		if !has(name) {
			return 0
		}
		d, _ := cmd.Flags().GetDuration(name)
		if d <= 0 {
			bad(name, "must be a positive duration like 30s")
		}
		return d
	}
	num := func(name string) int {
		if !has(name) {
			return 0
		}
		n, _ := cmd.Flags().GetInt(name)
		if n <= 0 {
			bad(name, "must be a positive whole number")
		}
		return n
	}
	c.Listen = value(cmd, s, "listen")
	c.DataDir = value(cmd, s, "data-dir")
	c.HostID = value(cmd, s, "host-id")
	c.RegistryURL = value(cmd, s, "registry-url")
	c.RegistryMaxConn = int32(num("registry-max-conns"))
	c.RegistryConnTO = dur("registry-connect-timeout")
	c.RegistryStmtTO = dur("registry-statement-timeout")
	if has("listen") {
		if _, _, err := net.SplitHostPort(c.Listen); err != nil {
			bad("listen", "must be host:port or :port")
		}
		c.PublicStatus = boolean("public-status")
		c.UI = boolean("ui")
		c.HeartbeatRTD = boolean("heartbeat-runtime-details")
		switch p := dtma.PortConflictPolicy(strings.ToLower(strings.TrimSpace(value(cmd, s, "legacy-port-conflict")))); p {
		case dtma.PortConflictRemap, dtma.PortConflictReject:
			c.LegacyPorts = p
		default:
			bad("legacy-port-conflict", "must be remap or reject")
		}
		c.DockerHost = value(cmd, s, "docker-host")
		c.DockerConfig = value(cmd, s, "docker-config")
		c.DefaultHostIP = value(cmd, s, "default-host-ip")
		if c.DefaultHostIP != "" && net.ParseIP(c.DefaultHostIP) == nil {
			bad("default-host-ip", "must be an IP address")
		}
		c.ResyncInterval = dur("resync-interval")
		c.StopTimeout = dur("stop-timeout")
		c.CrashRestarts = num("crashloop-restarts")
		c.CrashWindow = dur("crashloop-window")
		c.HeartbeatURL = value(cmd, s, "heartbeat-url")
		c.HeartbeatEvery = dur("heartbeat-interval")
		lo, hi, ok := parseRange(value(cmd, s, "port-range"))
		if !ok {
			bad("port-range", "must be FROM-TO within 1-65535")
		}
		c.PortRangeStart, c.PortRangeEnd = lo, hi
		labels, err := parseLabels(value(cmd, s, "container-labels"))
		if err != nil {
			bad("container-labels", err.Error())
		}
		c.ContainerLabels = labels
		c.StdioImages = dtma.StdioImages(splitList(value(cmd, s, "stdio-images")))
		c.MCPOrigins = splitList(value(cmd, s, "mcp-allowed-origins"))
		if c.RegistryAllow, err = dtma.ParseRegistryPatterns(value(cmd, s, "registry-allow")); err != nil {
			bad("registry-allow", err.Error())
		}
		if c.RegistryDeny, err = dtma.ParseRegistryPatterns(value(cmd, s, "registry-deny")); err != nil {
			bad("registry-deny", err.Error())
		}
		c.Adopt = strings.ToLower(strings.TrimSpace(value(cmd, s, "adopt")))
		switch c.Adopt {
		case "loopback", "off", "any":
		default:
			bad("adopt", "must be loopback, off or any")
		}
		c.readConfinement(cmd, s, bad)
		tokens, err := readTokens(s, value(cmd, s, "token-file"))
		if err != nil {
			bad("token-file", err.Error())
		}
		c.Tokens = tokens
		loadHTTPHardening(cmd, s, c, bad, dur, num)
	}
	switch strings.ToLower(value(cmd, s, "log-level")) {
	case "debug":
		c.LogLevel = slog.LevelDebug
	case "info", "":
		c.LogLevel = slog.LevelInfo
	case "warn", "warning":
		c.LogLevel = slog.LevelWarn
	case "error":
		c.LogLevel = slog.LevelError
	default:
		bad("log-level", "must be debug, info, warn or error")
	}
	c.LogFormat = value(cmd, s, "log-format")
	if c.LogFormat != "json" && c.LogFormat != "text" {
		bad("log-format", "must be json or text")
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("configuration: %s", strings.Join(errs, "; "))
	}
	return c, nil
}

// loadHTTPHardening reads the listener settings: TLS files (both or
// neither), the request read timeout, the connection cap and the
// failed-authentication limit.
func loadHTTPHardening(cmd *cobra.Command, s *streams, c *config, bad func(name, why string), dur func(string) time.Duration, num func(string) int) {
	c.TLSCertFile = value(cmd, s, "tls-cert-file")
	c.TLSKeyFile = value(cmd, s, "tls-key-file")
	switch {
	case c.TLSCertFile != "" && c.TLSKeyFile == "":
		bad("tls-key-file", "DTMA_TLS_KEY_FILE is required when DTMA_TLS_CERT_FILE (--tls-cert-file) is set")
	case c.TLSKeyFile != "" && c.TLSCertFile == "":
		bad("tls-cert-file", "DTMA_TLS_CERT_FILE is required when DTMA_TLS_KEY_FILE (--tls-key-file) is set")
	}
	c.HTTPReadTimeout = dur("http-read-timeout")
	c.MaxConnections = num("max-connections")
	n, _ := cmd.Flags().GetInt("auth-failure-limit")
	if n < 0 {
		bad("auth-failure-limit", "must be a whole number (0 turns the limit off)")
	}
	c.AuthFailureLimit = n
	if c.HealthConcurrency = num("health-concurrency"); c.HealthConcurrency < 1 {
		bad("health-concurrency", "must be at least 1")
	}
	if c.EventBuffer = num("event-buffer"); c.EventBuffer < 1 {
		bad("event-buffer", "must be at least 1")
	}
}

func parseRange(v string) (int, int, bool) {
	a, b, ok := strings.Cut(v, "-")
	lo, err1 := strconv.Atoi(strings.TrimSpace(a))
	hi, err2 := strconv.Atoi(strings.TrimSpace(b))
	if !ok || err1 != nil || err2 != nil || lo < 1 || hi > 65535 || lo > hi {
		return 0, 0, false
	}
	return lo, hi, true
}

// parseLabels reads "k=v,k=v". Keys in DTMA's own dtma.* namespace are
// refused: they carry ownership and must not be overridden.
func parseLabels(v string) (map[string]string, error) {
	out := map[string]string{}
	for _, kv := range strings.Split(v, ",") {
		kv = strings.TrimSpace(kv)
		if kv == "" {
			continue
		}
		k, val, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%q is not key=value", kv)
		}
		switch k {
		case dtma.LabelManaged, dtma.LabelHost, dtma.LabelInstance, dtma.LabelInstanceID, dtma.LabelAccountID, dtma.LabelSpecHash, dtma.LabelEnvNames, dtma.LabelPorts, dtma.LabelLimits:
			return nil, fmt.Errorf("label %s is DTMA's own", k)
		}
		out[k] = val
	}
	return out, nil
}

// readTokens collects the accepted bearer tokens: DTMA_BEARER_TOKEN,
// BACKEND_TO_DTMA_API_KEY and the lines of the token file. The error never
// contains a token.
func readTokens(s *streams, file string) ([]string, error) {
	var tokens []string
	for _, e := range []string{"DTMA_BEARER_TOKEN", "BACKEND_TO_DTMA_API_KEY"} {
		if v := strings.TrimSpace(s.getenv(e)); v != "" {
			tokens = append(tokens, v)
		}
	}
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("cannot read %s: %v", file, err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if t := strings.TrimSpace(line); t != "" && !strings.HasPrefix(t, "#") {
				tokens = append(tokens, t)
			}
		}
	}
	return tokens, nil
}

// resolveHostID returns the configured host id, or the one stored in the
// data dir, generating and storing it on first use.
func resolveHostID(c *config) (string, error) {
	if c.HostID != "" {
		if strings.ContainsAny(c.HostID, " \t\n,=") || len(c.HostID) > 128 {
			return "", fmt.Errorf("--host-id: must be at most 128 characters without spaces, commas or '='")
		}
		return c.HostID, nil
	}
	path := filepath.Join(c.DataDir, "host-id")
	if b, err := os.ReadFile(path); err == nil {
		if id := strings.TrimSpace(string(b)); id != "" {
			return id, nil
		}
	} else if !os.IsNotExist(err) {
		return "", fmt.Errorf("read host id: %w", err)
	}
	if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
		return "", fmt.Errorf("create data dir: %w", err)
	}
	id := "host-" + dtma.NewUUID()[:13]
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("store host id: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", fmt.Errorf("store host id: %w", err)
	}
	return id, nil
}

func newLogger(c *config, s *streams) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.LogLevel}
	if c.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(s.err, opts))
	}
	return slog.New(slog.NewJSONHandler(s.err, opts))
}

// splitList splits a comma-separated setting, trimming spaces and dropping
// empty items.
func splitList(v string) []string {
	var out []string
	for _, item := range strings.Split(v, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}
