package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/agentopia/dtma"
	"github.com/agentopia/dtma/agent"
	"github.com/agentopia/dtma/docker"
	"github.com/agentopia/dtma/health"
	"github.com/agentopia/dtma/heartbeat"
	dtmahttp "github.com/agentopia/dtma/http"
	"github.com/agentopia/dtma/mcpbridge"
	"github.com/agentopia/dtma/metrics"
	"github.com/agentopia/dtma/procfs"
	"github.com/spf13/cobra"
)

func newServeCommand(s *streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the agent",
		Long: `Run the agent: the HTTP API (legacy /tools routes and /v1), the reconciler
that keeps the registry in step with Docker, and the heartbeat.

At least one bearer token is required (DTMA_BEARER_TOKEN,
BACKEND_TO_DTMA_API_KEY or --token-file). SIGTERM stops the agent
gracefully and stops no container.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := loadConfig(cmd, s)
			if err != nil {
				return err
			}
			return serve(cmd.Context(), c, s, openDocker)
		},
	}
	addSettings(cmd.Flags())
	return cmd
}

// servedRuntime is the container runtime serve drives: Docker, or a fake
// in tests.
type servedRuntime interface {
	dtma.Runtime
	ServerVersion(ctx context.Context) (engine, api string, err error)
	Close() error
}

// openDocker is serve's runtime: the Docker daemon of the options.
func openDocker(o docker.Options) (servedRuntime, error) {
	rt, err := docker.New(o)
	if err != nil {
		return nil, err // not a nil *docker.Runtime in a non-nil interface
	}
	return rt, nil
}

// serve runs the agent on the runtime openRuntime returns until ctx ends
// (or the listener fails), then returns with every container left as it is.
func serve(ctx context.Context, c *config, s *streams, openRuntime func(docker.Options) (servedRuntime, error)) error {
	log := newLogger(c, s)
	gcDefault(s.getenv)
	if len(c.Tokens) == 0 {
		return errors.New("no bearer token configured: set DTMA_BEARER_TOKEN (or BACKEND_TO_DTMA_API_KEY, or --token-file); DTMA never serves an open API")
	}
	hostID, err := resolveHostID(c)
	if err != nil {
		return err
	}
	var certs *dtmahttp.CertReloader
	if c.TLSCertFile != "" {
		if certs, err = dtmahttp.NewCertReloader(c.TLSCertFile, c.TLSKeyFile); err != nil {
			return fmt.Errorf("--tls-cert-file/--tls-key-file: %w", err)
		}
	}
	_, portStr, _ := net.SplitHostPort(c.Listen)
	listenPort, _ := strconv.Atoi(portStr)
	l, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", c.Listen, err)
	}
	defer l.Close()
	if listenPort == 0 {
		listenPort = l.Addr().(*net.TCPAddr).Port
	}

	// The shared lock tells `dtma restore` that this registry is served.
	lock, err := lockFile(serveLockPath(c, hostID), false)
	if err != nil {
		return err
	}
	defer lock.Close()

	reg, where, err := openRegistry(ctx, c, hostID, log, true)
	if err != nil {
		return err
	}
	defer reg.Close()
	prom := metrics.New()
	prom.ResyncInterval.Set(c.ResyncInterval.Seconds())
	backend := "sqlite"
	if strings.HasPrefix(c.RegistryURL, "postgres") {
		backend = "postgres"
	}
	mreg := prom.WrapRegistry(reg, backend)

	rt, err := openRuntime(docker.Options{
		Host:             c.DockerHost,
		HostID:           hostID,
		DockerConfig:     c.DockerConfig,
		DefaultHostIP:    c.DefaultHostIP,
		ExtraLabels:      c.ContainerLabels,
		Network:          c.Network,
		NetworkShardSize: c.NetworkShardSize,
		NetworkSubnets:   c.NetworkSubnets,
	})
	if err != nil {
		return fmt.Errorf("docker client: %w", err)
	}
	defer rt.Close()

	// The stdio instances' bridges live as long as the agent serves.
	bridges := mcpbridge.NewHost(ctx, rt, mcpbridge.Config{Logger: log, AllowedOrigins: c.MCPOrigins})
	defer bridges.Close()
	// Instance events: the agent's view publishes every change to the
	// hub (GET /v1/events) and wakes the health monitor.
	hub := &dtmahttp.EventHub{
		Buffer:        c.EventBuffer,
		OnDrop:        prom.EventsDropped.Inc,
		OnSubscribers: func(n int) { prom.EventsSubscribers.Set(float64(n)) },
	}
	// Health checks: the prober dials tools' published ports; the monitor
	// keeps its targets in step with the agent's instances and records
	// transitions through the agent's view; svc shows the live health on
	// every read (v1, legacy, heartbeat, /metrics, the dashboard).
	prober := health.New(health.Config{
		Concurrency: c.HealthConcurrency,
		Logger:      log,
		OnProbe: func(t dtma.CheckType, result string, latency time.Duration) {
			prom.Probe(string(t), result, latency)
		},
	})
	mon := health.NewMonitor(prober)

	ag, err := agent.New(ctx, agent.Config{
		Version:           version,
		ListenPort:        listenPort,
		PortRangeStart:    c.PortRangeStart,
		PortRangeEnd:      c.PortRangeEnd,
		DefaultHostIP:     c.DefaultHostIP,
		StopTimeout:       c.StopTimeout,
		ResyncInterval:    c.ResyncInterval,
		CrashLoopRestarts: c.CrashRestarts,
		CrashLoopWindow:   c.CrashWindow,
		DefaultLimits:     c.DefaultLimits,
		MaxLimits:         c.MaxLimits,
		Policy:            c.Policy,
		Logger:            log,
		Registries:        &dtma.RegistryPolicy{Allow: c.RegistryAllow, Deny: c.RegistryDeny},
		Bridges:           bridges,
		StdioImages:       c.StdioImages,
		Events:            dtma.EventSinks{hub, mon},
		Observer:          prom,
	}, mreg, prom.WrapRuntime(rt))
	if err != nil {
		return err
	}
	metrics := procfs.Source{}
	mon.List = ag.ListInstances // the view's own rows, read only: the monitor lays live health over copies
	mon.Record = ag.RecordHealth
	mon.Restart = ag.RestartUnhealthy
	mon.OnRestart = prom.UnhealthyRestarts.Inc
	mon.Logger = log
	mon.BridgeHostIP = c.DefaultHostIP
	mon.SyncEvery = 2 * time.Second // a safety net: the view's events wake it at once
	svc := &health.Service{InstanceService: ag, Prober: prober}
	srv := &dtmahttp.Server{
		Service:      svc,
		Metrics:      metrics,
		Version:      version,
		Logger:       log,
		Tokens:       c.Tokens,
		PublicStatus: c.PublicStatus,
		Prometheus:   prom.Registry,
		Events:       hub,

		LegacyPortConflict: c.LegacyPorts,
		Environment: dtmahttp.LegacyEnvironment{
			HasAuthToken:  strings.TrimSpace(s.getenv("DTMA_BEARER_TOKEN")) != "",
			HasAPIKey:     strings.TrimSpace(s.getenv("BACKEND_TO_DTMA_API_KEY")) != "",
			HasAPIBaseURL: c.HeartbeatURL != "",
			Port:          strconv.Itoa(listenPort),
		},
		Adopt:            dtmahttp.AdoptPolicy(c.Adopt),
		ReadTimeout:      c.HTTPReadTimeout,
		MaxConns:         c.MaxConnections,
		AuthFailureLimit: c.AuthFailureLimit,
		UI:               dtmahttp.UIConfig{Disabled: !c.UI, RegistryKind: strings.SplitN(where, ":", 2)[0], DockerVersion: rt.ServerVersion},
	}
	if srv.AuthFailureLimit == 0 {
		srv.AuthFailureLimit = -1 // the setting's 0 means off
	}
	var hup chan os.Signal
	if certs != nil {
		srv.TLSConfig = certs.TLSConfig()
		hup = make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP) // before "dtma starting": a SIGHUP after it never kills the agent
		defer signal.Stop(hup)
	}
	log.Info("dtma starting", "version", version, "host_id", hostID, "listen", l.Addr().String(), "registry", where, "tls", certs != nil,
		"network", c.Network, "default_limits", c.DefaultLimits.String(), "policy_rules", policyRules(c.Policy))

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = ag.Run(ctx)
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		mon.Run(ctx)
	}()
	if certs != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			reloadOnHUP(ctx, hup, certs, log)
		}()
	}
	if c.HeartbeatURL != "" {
		hb := &heartbeat.Sender{
			URL:       c.HeartbeatURL,
			Token:     c.Tokens[0],
			Interval:  c.HeartbeatEvery,
			Timeout:   15 * time.Second,
			Version:   version,
			Instances: svc.ListInstances,
			Metrics:   metrics,
			Log:       log,

			RuntimeDetails: c.HeartbeatRTD,
			OnSend:         prom.Heartbeat,
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			hb.Run(ctx)
		}()
	}
	err = srv.ListenAndServe(ctx, l)
	cancel()
	wg.Wait()
	log.Info("dtma stopped; containers left running")
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// defaultGCPercent is the agent's GOGC when the operator sets neither GOGC
// nor GOMEMLIMIT. The Go runtime keeps about (1 + GOGC/100) times the live
// heap, and returns memory to the system only down to about that: at 100
// (Go's default) an agent with a thousand instances held ~14 MB of heap
// for ~5 MB live; at 50 it holds ~1.5 times, for a few more GC cycles
// (BENCHMARKS.md).
const defaultGCPercent = 50

// gcDefault sets the GC target to defaultGCPercent unless the environment
// (getenv) sets GOGC or GOMEMLIMIT, which the Go runtime then applies as
// usual; it reports whether it set it.
func gcDefault(getenv func(string) string) bool {
	if getenv("GOGC") != "" || getenv("GOMEMLIMIT") != "" {
		return false
	}
	debug.SetGCPercent(defaultGCPercent)
	return true
}

// reloadOnHUP reads the TLS certificate and key again on every signal on
// hup (SIGHUP) until ctx ends. A failed reload is logged and the old
// certificate kept.
func reloadOnHUP(ctx context.Context, hup <-chan os.Signal, certs *dtmahttp.CertReloader, log *slog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			if err := certs.Reload(); err != nil {
				log.Error("TLS certificate reload failed; keeping the current certificate", "err", err)
				continue
			}
			log.Info("TLS certificate reloaded")
		}
	}
}

// policyRules is how many image rules the policy holds (0 without one).
func policyRules(p *dtma.Policy) int {
	if p == nil {
		return 0
	}
	return len(p.Images)
}
