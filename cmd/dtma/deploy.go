package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/agentopia/dtma"
	dtmahttp "github.com/agentopia/dtma/http"
	"github.com/spf13/cobra"
)

// deployOptions are `dtma deploy`'s inputs once the flags are parsed.
type deployOptions struct {
	client *dtmahttp.Client
	out    io.Writer
	errw   io.Writer
	req    dtmahttp.DeployRequest
	output outputOptions
}

func newDeployCommand(s *streams) *cobra.Command {
	var (
		o                           deployOptions
		envs, envFiles, ports       []string
		regUser                     string
		regPassStdin, regTokenStdin bool
		hf                          healthFlags
	)
	cmd := &cobra.Command{
		Use:   "deploy IMAGE --name NAME",
		Short: "Deploy a tool container (asks the running agent)",
		Long: `Deploy IMAGE as the instance NAME. An identical deploy of an existing
instance is not an error: the agent makes sure it runs. Env values are sent
to the agent only; they are never printed.`,
		Args: usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.req.Image = args[0]
			env, err := parseEnv(envs, envFiles, s.getenv)
			if err != nil {
				return usageError(err)
			}
			o.req.Env = env
			if o.req.Ports, err = parsePorts(ports); err != nil {
				return usageError(err)
			}
			if o.req.Name == "" {
				return usageError(fmt.Errorf("--name: required"))
			}
			if o.req.Health, err = hf.request(); err != nil {
				return usageError(err)
			}
			if o.req.RegistryAuth, err = registryAuth(cmd, s, regUser, regPassStdin, regTokenStdin); err != nil {
				return usageError(err)
			}
			if o.client, err = newAPIClient(cmd, s); err != nil {
				return err
			}
			o.out, o.errw = s.out, s.err
			return runDeploy(cmd.Context(), o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.req.Name, "name", "", "instance name (required)")
	f.StringVar(&o.req.AccountToolInstanceID, "account-id", "", "the platform's account tool instance id (UUID)")
	f.StringArrayVarP(&envs, "env", "e", nil, "environment variable K=V (K alone: take the value from this environment); repeatable")
	f.StringArrayVar(&envFiles, "env-file", nil, "read K=V lines from a file (# comments and blank lines skipped); repeatable")
	f.StringArrayVarP(&ports, "publish", "p", nil, "publish a port: [IP:]HOST:CONTAINER[/tcp|udp], or CONTAINER for a port from the agent's range; repeatable")
	f.StringVar(&o.req.PullPolicy, "pull", "", "pull the image: always, missing (default) or never")
	f.StringVar(&regUser, "registry-user", "", "username for a private registry (password from DTMA_REGISTRY_PASSWORD or --registry-password-stdin)")
	f.BoolVar(&regPassStdin, "registry-password-stdin", false, "read the registry password (or access token) from stdin")
	f.BoolVar(&regTokenStdin, "registry-identity-token-stdin", false, "read a registry identity token from stdin")
	f.StringVar(&hf.check, "health", "", "health check: none, tcp, http[:PATH] or mcp[:PATH] (default: the agent's — tcp on the first published tcp port)")
	f.IntVar(&hf.port, "health-port", 0, "container port the check dials (default: the first published tcp port)")
	f.DurationVar(&hf.interval, "health-interval", 0, "time between checks (default 10s)")
	f.DurationVar(&hf.timeout, "health-timeout", 0, "time one check may take (default 5s)")
	f.IntVar(&hf.retries, "health-retries", 0, "failures in a row that make the tool unhealthy (default 3)")
	f.DurationVar(&hf.startPeriod, "health-start-period", 0, "failures during this time after a start do not count")
	f.BoolVar(&hf.restart, "health-restart", false, "restart the container when it turns unhealthy (on_unhealthy: restart)")
	addClientFlags(cmd)
	addOutputFlags(cmd, &o.output)
	return cmd
}

// healthFlags are the --health* flags of `dtma deploy`.
type healthFlags struct {
	check                          string
	port, retries                  int
	interval, timeout, startPeriod time.Duration
	restart                        bool
}

// request returns the v1 health object the flags ask for: nil when no
// --health* flag is set (the agent's default check), an error naming the
// flag for a check type it cannot be. The agent validates the rest.
func (h healthFlags) request() (*dtmahttp.HealthCheckRequest, error) {
	if h == (healthFlags{}) {
		return nil, nil
	}
	typ, path, _ := strings.Cut(strings.TrimSpace(h.check), ":")
	switch typ {
	case "":
		return nil, fmt.Errorf("--health: required with the other --health-* flags (none, tcp, http[:PATH] or mcp[:PATH])")
	case "none", "tcp":
		if path != "" {
			return nil, fmt.Errorf("--health: a %s check has no path", typ)
		}
	case "http", "mcp":
	default:
		return nil, fmt.Errorf("--health: %q is not none, tcp, http[:PATH] or mcp[:PATH]", typ)
	}
	r := &dtmahttp.HealthCheckRequest{Type: typ, Path: path, Port: h.port, Retries: h.retries,
		Interval: h.interval.Seconds(), Timeout: h.timeout.Seconds(), StartPeriod: h.startPeriod.Seconds()}
	if h.restart {
		r.OnUnhealthy = "restart"
	}
	return r, nil
}

// runDeploy sends the deploy, shows the agent's pull progress on stderr
// (bars on a terminal, plain lines otherwise), and prints the instance the
// agent answered (a table row, JSON, a template or only the name); stderr
// says whether it was created or existed. Errors are the agent's
// (*dtmahttp.APIError).
func runDeploy(ctx context.Context, o deployOptions) error {
	pp := newProgressPrinter(o.errw)
	inst, created, err := o.client.DeployProgress(ctx, o.req, pp.show)
	if err != nil {
		return err
	}
	if created {
		fmt.Fprintf(o.errw, "created %s\n", inst.Name)
	} else {
		fmt.Fprintf(o.errw, "%s exists with this spec; made sure it runs\n", inst.Name)
	}
	return writeInstances(o.out, o.output, rowsOf([]dtmahttp.Instance{inst}), instanceColumns)
}

// parseEnv merges --env-file files (in order) and then -e flags. "-e K"
// takes K's value from getenv, as docker run does.
func parseEnv(flags, files []string, getenv func(string) string) (map[string]string, error) {
	env := map[string]string{}
	for _, file := range files {
		f, err := os.Open(file)
		if err != nil {
			return nil, fmt.Errorf("--env-file: %w", err)
		}
		sc := bufio.NewScanner(f)
		line := 0
		for sc.Scan() {
			line++
			t := strings.TrimSpace(sc.Text())
			if t == "" || strings.HasPrefix(t, "#") {
				continue
			}
			k, v, ok := strings.Cut(t, "=")
			if !ok {
				v = getenv(k)
			}
			if k == "" {
				f.Close()
				return nil, fmt.Errorf("--env-file %s:%d: missing variable name", file, line)
			}
			env[k] = v
		}
		err = sc.Err()
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("--env-file %s: %w", file, err)
		}
	}
	for _, e := range flags {
		k, v, ok := strings.Cut(e, "=")
		if k == "" {
			return nil, fmt.Errorf("--env %q: missing variable name", strings.SplitN(e, "=", 2)[0])
		}
		if !ok {
			v = getenv(k)
		}
		env[k] = v
	}
	if len(env) == 0 {
		return nil, nil
	}
	return env, nil
}

// parsePorts reads -p values in the Docker CLI's shape:
// [IP:]HOST:CONTAINER[/proto] or CONTAINER[/proto] (host port 0: the agent
// allocates one from its range).
func parsePorts(flags []string) ([]dtma.Port, error) {
	var ports []dtma.Port
	for _, p := range flags {
		spec, proto, _ := strings.Cut(p, "/")
		if proto == "" {
			proto = "tcp"
		}
		if proto != "tcp" && proto != "udp" {
			return nil, fmt.Errorf("--publish %q: protocol must be tcp or udp", p)
		}
		var ip, host, ctr string
		parts := strings.Split(spec, ":")
		switch len(parts) {
		case 1:
			ctr = parts[0]
		case 2:
			host, ctr = parts[0], parts[1]
		case 3:
			ip, host, ctr = parts[0], parts[1], parts[2]
			if _, err := netip.ParseAddr(ip); err != nil {
				return nil, fmt.Errorf("--publish %q: %q is not an IP address", p, ip)
			}
		default:
			return nil, fmt.Errorf("--publish %q: want [IP:]HOST:CONTAINER[/proto]", p)
		}
		cp, err := strconv.Atoi(ctr)
		if err != nil || cp < 1 || cp > 65535 {
			return nil, fmt.Errorf("--publish %q: container port must be 1-65535", p)
		}
		hp := 0
		if host != "" {
			if hp, err = strconv.Atoi(host); err != nil || hp < 0 || hp > 65535 {
				return nil, fmt.Errorf("--publish %q: host port must be 0-65535", p)
			}
		}
		ports = append(ports, dtma.Port{ContainerPort: cp, Protocol: proto, HostPort: hp, HostIP: ip})
	}
	return ports, nil
}

// registryAuth builds the deploy's registry credential from the flags: the
// secret comes from stdin or DTMA_REGISTRY_PASSWORD, never from the
// command line (it would show in ps and shell history). nil without
// --registry-user and identity token.
func registryAuth(cmd *cobra.Command, s *streams, user string, passStdin, tokenStdin bool) (*dtmahttp.RegistryAuth, error) {
	if passStdin && tokenStdin {
		return nil, fmt.Errorf("--registry-password-stdin and --registry-identity-token-stdin exclude each other")
	}
	var secret string
	if passStdin || tokenStdin {
		b, err := io.ReadAll(io.LimitReader(cmd.InOrStdin(), 64<<10))
		if err != nil {
			return nil, fmt.Errorf("read the registry secret from stdin: %w", err)
		}
		secret = strings.TrimRight(string(b), "\r\n")
		if secret == "" {
			return nil, fmt.Errorf("stdin holds no registry secret")
		}
	}
	if tokenStdin {
		return &dtmahttp.RegistryAuth{Username: user, IdentityToken: secret}, nil
	}
	if user == "" {
		if passStdin {
			return nil, fmt.Errorf("--registry-password-stdin: --registry-user is required")
		}
		return nil, nil
	}
	if !passStdin {
		secret = s.getenv("DTMA_REGISTRY_PASSWORD")
	}
	if secret == "" {
		return nil, fmt.Errorf("--registry-user: give the password with --registry-password-stdin or DTMA_REGISTRY_PASSWORD")
	}
	return &dtmahttp.RegistryAuth{Username: user, Password: secret}, nil
}
