package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	dtmahttp "github.com/agentopia/dtma/http"
	"github.com/spf13/cobra"
)

func addClientFlags(cmd *cobra.Command) {
	cmd.Flags().String("url", "", "agent URL (env DTMA_URL; default http://127.0.0.1:30000)")
}

// newAPIClient returns the v1 client for the running agent (--url or
// DTMA_URL, DTMA_TOKEN or DTMA_BEARER_TOKEN).
func newAPIClient(cmd *cobra.Command, s *streams) (*dtmahttp.Client, error) {
	base, _ := cmd.Flags().GetString("url")
	if base == "" {
		base = s.getenv("DTMA_URL")
	}
	if base == "" {
		base = "http://127.0.0.1:30000"
	}
	token := s.getenv("DTMA_TOKEN")
	if token == "" {
		token = s.getenv("DTMA_BEARER_TOKEN")
	}
	if token == "" {
		return nil, fmt.Errorf("no token: set DTMA_TOKEN to the agent's bearer token")
	}
	hc := &http.Client{Timeout: 5 * time.Minute}
	if ca := s.getenv("DTMA_CA_FILE"); ca != "" {
		tr, err := trustingTransport(ca)
		if err != nil {
			return nil, err
		}
		hc.Transport = tr
	}
	c := dtmahttp.NewClient(base, token)
	c.HTTP = hc
	return c, nil
}

// trustingTransport returns a transport that trusts the PEM certificates
// in file (an agent's self-signed certificate or its CA) instead of the
// system's roots, for an agent serving HTTPS (DTMA_TLS_CERT_FILE).
func trustingTransport(file string) (*http.Transport, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("DTMA_CA_FILE: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("DTMA_CA_FILE: no PEM certificate in %s", file)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return tr, nil
}

// instanceRow is a v1 instance (the wire type the agent serves) with what
// the table and --format templates show.
type instanceRow struct {
	dtmahttp.Instance
}

func rowsOf(list []dtmahttp.Instance) []instanceRow {
	rows := make([]instanceRow, 0, len(list))
	for _, inst := range list {
		rows = append(rows, instanceRow{inst})
	}
	return rows
}

func (r instanceRow) PortsString() string {
	var parts []string
	for _, p := range r.Ports {
		ip := p.HostIP
		if ip == "" {
			ip = "0.0.0.0"
		}
		parts = append(parts, fmt.Sprintf("%s:%d->%d/%s", ip, p.HostPort, p.ContainerPort, p.Protocol))
	}
	return strings.Join(parts, ", ")
}

func (r instanceRow) ShortContainerID() string {
	if len(r.ContainerID) > 12 {
		return r.ContainerID[:12]
	}
	return r.ContainerID
}
