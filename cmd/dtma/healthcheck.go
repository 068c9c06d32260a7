package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// healthcheckOptions are `dtma healthcheck`'s inputs.
type healthcheckOptions struct {
	url  string // the agent's base URL
	http *http.Client
}

func newHealthcheckCommand(s *streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "healthcheck",
		Short: "Exit 0 when the local agent answers GET /health (the container image's HEALTHCHECK)",
		Long: `Ask the agent on this machine for GET /health (no token needed) and exit 0
when it answers 200, 1 otherwise. The address is --url, else DTMA_URL, else
127.0.0.1 on the port of DTMA_LISTEN/PORT (default 30000). DTMA_CA_FILE
trusts an agent's own certificate when it serves HTTPS.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, args []string) error {
			o := healthcheckOptions{url: healthURL(cmd, s), http: &http.Client{Timeout: 5 * time.Second}}
			if ca := s.getenv("DTMA_CA_FILE"); ca != "" {
				tr, err := trustingTransport(ca)
				if err != nil {
					return err
				}
				o.http.Transport = tr
			}
			return runHealthcheck(cmd.Context(), o)
		},
	}
	addClientFlags(cmd)
	return cmd
}

// healthURL is where the local agent listens.
func healthURL(cmd *cobra.Command, s *streams) string {
	if u, _ := cmd.Flags().GetString("url"); u != "" {
		return u
	}
	if u := s.getenv("DTMA_URL"); u != "" {
		return u
	}
	port := "30000"
	if l := s.getenv("DTMA_LISTEN"); l != "" {
		if _, p, err := net.SplitHostPort(l); err == nil && p != "" {
			port = p
		}
	} else if p := s.getenv("PORT"); p != "" {
		port = p
	}
	scheme := "http"
	if s.getenv("DTMA_TLS_CERT_FILE") != "" {
		scheme = "https"
	}
	return scheme + "://127.0.0.1:" + port
}

// runHealthcheck returns nil when GET <url>/health answers 200.
func runHealthcheck(ctx context.Context, o healthcheckOptions) error {
	req, err := http.NewRequestWithContext(ctx, "GET", strings.TrimRight(o.url, "/")+"/health", nil)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	resp, err := o.http.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: GET /health answered %d", resp.StatusCode)
	}
	return nil
}
