package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/agentopia/dtma"
	"github.com/agentopia/dtma/docker"
	dtmahttp "github.com/agentopia/dtma/http"
	"github.com/spf13/cobra"
)

// maxClockSkew is how far this machine's clock may be from the Docker
// daemon's before doctor fails: StartedAt and crash-loop windows compare
// the two.
const maxClockSkew = 2 * time.Second

// doctorOptions are `dtma doctor`'s inputs. Each dependency is a function
// so that a check can be exercised alone.
type doctorOptions struct {
	cfg    *config
	out    io.Writer
	docker func(ctx context.Context) (docker.DaemonInfo, error)
	// registry opens and closes the registry; nil error when it opens.
	registry func(ctx context.Context) (string, error)
	// client is the agent's v1 client; nil when no token is known.
	client *dtmahttp.Client
	now    func() time.Time
}

// check is one line of the report.
type check struct {
	name   string
	status string // ok, warn or FAIL
	detail string
	fix    string
}

func newDoctorCommand(s *streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Check this host's setup (Docker, registry, token, ports, clock, data dir) and say what to fix",
		Long: `Check, with the same settings as ` + "`serve`" + `: the Docker daemon answers; the
registry opens; a bearer token is set and the running agent accepts it; the
port range is sane and has free ports; this machine's clock agrees with the
Docker daemon's; the data dir is 0700 and its files 0600. Every failed check
says what to fix; the exit code is 1 when any check failed.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := loadConfig(cmd, s)
			if err != nil {
				return err
			}
			o := doctorOptions{cfg: c, out: s.out, now: time.Now}
			o.docker = func(ctx context.Context) (docker.DaemonInfo, error) {
				rt, err := docker.New(docker.Options{Host: c.DockerHost})
				if err != nil {
					return docker.DaemonInfo{}, err
				}
				defer rt.Close()
				return rt.Info(ctx)
			}
			o.registry = func(ctx context.Context) (string, error) {
				hostID, err := resolveHostID(c)
				if err != nil {
					return "", err
				}
				reg, where, err := openRegistry(ctx, c, hostID, newLogger(c, s), false)
				if err != nil {
					return "", err
				}
				defer reg.Close()
				return where + ", host " + hostID, reg.Ping(ctx)
			}
			env := s.getenv
			if env("DTMA_TOKEN") == "" && env("DTMA_BEARER_TOKEN") == "" && len(c.Tokens) > 0 {
				token := c.Tokens[0]
				env = func(k string) string {
					if k == "DTMA_TOKEN" {
						return token
					}
					return s.getenv(k)
				}
			}
			if cl, err := newAPIClient(cmd, &streams{out: s.out, err: s.err, getenv: env}); err == nil {
				cl.HTTP.Timeout = 5 * time.Second
				o.client = cl
			}
			return runDoctor(cmd.Context(), o)
		},
	}
	addSettings(cmd.Flags())
	addClientFlags(cmd)
	return cmd
}

// runDoctor runs every check, prints one line per check (and its fix) and
// returns an error when any failed.
func runDoctor(ctx context.Context, o doctorOptions) error {
	checks := []check{
		o.checkDocker(ctx),
		o.checkRegistry(ctx),
		o.checkToken(ctx),
		o.checkPortRange(),
		o.checkDataDir(),
	}
	failed := 0
	for _, c := range checks {
		fmt.Fprintf(o.out, "%-4s  %-10s %s\n", c.status, c.name, c.detail)
		if c.fix != "" {
			fmt.Fprintf(o.out, "      %-10s fix: %s\n", "", c.fix)
		}
		if c.status == "FAIL" {
			failed++
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d checks failed", failed, len(checks))
	}
	return nil
}

// checkDocker pings the daemon and compares its clock with ours (the
// daemon's answer time is taken halfway through the round trip).
func (o doctorOptions) checkDocker(ctx context.Context) check {
	c := check{name: "docker"}
	before := o.now()
	info, err := o.docker(ctx)
	after := o.now()
	if err != nil {
		c.status, c.detail = "FAIL", dtma.ErrorMessage(err)
		c.fix = "start Docker, or point DOCKER_HOST/--docker-host at it; the user running dtma needs access to its socket (the docker group)"
		return c
	}
	mid := before.Add(after.Sub(before) / 2)
	skew := info.SystemTime.Sub(mid)
	if skew < 0 {
		skew = -skew
	}
	c.detail = fmt.Sprintf("Engine %s answers; clock skew %s", info.ServerVersion, skew.Round(time.Millisecond))
	c.status = "ok"
	if skew > maxClockSkew+after.Sub(before) {
		c.status = "FAIL"
		c.fix = "synchronise the clocks (systemd-timesyncd or chrony) of this machine and the Docker host"
	}
	return c
}

func (o doctorOptions) checkRegistry(ctx context.Context) check {
	c := check{name: "registry"}
	where, err := o.registry(ctx)
	if err != nil {
		c.status, c.detail = "FAIL", dtma.ErrorMessage(err)
		c.fix = "check DTMA_REGISTRY_URL / DTMA_DATA_DIR; for PostgreSQL that the server answers and the user may create tables"
		return c
	}
	c.status, c.detail = "ok", where+" opens"
	return c
}

func (o doctorOptions) checkToken(ctx context.Context) check {
	c := check{name: "token"}
	if len(o.cfg.Tokens) == 0 {
		c.status, c.detail = "FAIL", "no bearer token configured: the agent refuses to start"
		c.fix = "set DTMA_BEARER_TOKEN (or BACKEND_TO_DTMA_API_KEY, or DTMA_TOKEN_FILE)"
		return c
	}
	for _, t := range o.cfg.Tokens {
		if len(t) < 16 {
			c.status, c.detail = "warn", fmt.Sprintf("%d tokens set; one is shorter than 16 characters", len(o.cfg.Tokens))
			c.fix = "use long random tokens (openssl rand -hex 32)"
		}
	}
	if o.client == nil {
		if c.status == "" {
			c.status, c.detail = "ok", fmt.Sprintf("%d tokens set (no DTMA_TOKEN to try against the agent)", len(o.cfg.Tokens))
		}
		return c
	}
	_, err := o.client.Instances(ctx)
	var api *dtmahttp.APIError
	switch {
	case err == nil:
		if c.status == "" {
			c.status, c.detail = "ok", fmt.Sprintf("%d tokens set; the agent at %s accepts the token", len(o.cfg.Tokens), o.client.BaseURL)
		}
	case errors.As(err, &api) && (api.Status == 401 || api.Status == 403):
		c.status, c.detail = "FAIL", fmt.Sprintf("the agent at %s refuses the token: %s", o.client.BaseURL, api.Error())
		c.fix = "set DTMA_TOKEN to one of the agent's tokens (or restart the agent after changing them)"
	default:
		if c.status == "" {
			c.status = "warn"
		}
		c.detail = fmt.Sprintf("%d tokens set; the agent at %s did not answer: %v", len(o.cfg.Tokens), o.client.BaseURL, err)
		c.fix = "start the agent (systemctl start dtma), or set DTMA_URL to where it listens"
	}
	return c
}

// checkPortRange checks that the range is within 1024-65535, does not hold
// the agent's own port, and has free ports (a probe bind of each).
func (o doctorOptions) checkPortRange() check {
	c := check{name: "ports"}
	lo, hi := o.cfg.PortRangeStart, o.cfg.PortRangeEnd
	_, lp, _ := net.SplitHostPort(o.cfg.Listen)
	listen, _ := strconv.Atoi(lp)
	switch {
	case lo < 1024 || hi > 65535 || lo > hi:
		c.status, c.detail = "FAIL", fmt.Sprintf("range %d-%d is not within 1024-65535", lo, hi)
		c.fix = "set DTMA_PORT_RANGE, e.g. 31000-31999"
		return c
	case listen >= lo && listen <= hi:
		c.status, c.detail = "FAIL", fmt.Sprintf("range %d-%d holds the agent's own port %d", lo, hi, listen)
		c.fix = "move DTMA_PORT_RANGE or DTMA_LISTEN apart"
		return c
	}
	free := 0
	for p := lo; p <= hi; p++ {
		l, err := net.Listen("tcp", ":"+strconv.Itoa(p))
		if err == nil {
			l.Close()
			free++
		}
	}
	c.status, c.detail = "ok", fmt.Sprintf("range %d-%d: %d of %d ports free (the rest are in use, tools included)", lo, hi, free, hi-lo+1)
	if free == 0 {
		c.status, c.fix = "FAIL", "widen DTMA_PORT_RANGE or free ports in it"
	}
	return c
}

// checkDataDir checks that the data dir is 0700 and the files dtma writes
// there are 0600. A data dir that does not exist yet is fine (serve makes it).
func (o doctorOptions) checkDataDir() check {
	c := check{name: "data dir"}
	dir := o.cfg.DataDir
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		c.status, c.detail = "ok", dir+" does not exist yet (serve creates it, mode 0700)"
		return c
	case err != nil:
		c.status, c.detail, c.fix = "FAIL", err.Error(), "make "+dir+" readable by the user running dtma"
		return c
	case !st.IsDir():
		c.status, c.detail, c.fix = "FAIL", dir+" is not a directory", "set DTMA_DATA_DIR to a directory"
		return c
	}
	var bad []string
	if st.Mode().Perm()&0o077 != 0 {
		bad = append(bad, fmt.Sprintf("%s is %04o", dir, st.Mode().Perm()))
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		if fi.Mode().Perm()&0o077 != 0 {
			bad = append(bad, fmt.Sprintf("%s is %04o", filepath.Join(dir, e.Name()), fi.Mode().Perm()))
		}
	}
	if len(bad) > 0 {
		c.status, c.detail = "FAIL", strings.Join(bad, "; ")
		c.fix = fmt.Sprintf("chmod 700 %s && chmod 600 %s/*", dir, dir)
		return c
	}
	c.status, c.detail = "ok", dir+" is 0700, its files 0600"
	return c
}
