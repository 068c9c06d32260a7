package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// apiClient calls a running agent's v1 API (DTMA_URL, DTMA_TOKEN).
type apiClient struct {
	base  string
	token string
	http  *http.Client
}

func addClientFlags(cmd *cobra.Command) {
	cmd.Flags().String("url", "", "agent URL (env DTMA_URL; default http://127.0.0.1:30000)")
}

func newAPIClient(cmd *cobra.Command, s *streams) (*apiClient, error) {
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
	return &apiClient{base: strings.TrimRight(base, "/"), token: token, http: hc}, nil
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

// apiError is a non-2xx answer of the agent.
type apiError struct {
	Status  int
	Code    string
	Message string
}

func (e *apiError) Error() string {
	if e.Code != "" {
		return fmt.Sprintf("%s (%d): %s", e.Code, e.Status, e.Message)
	}
	return fmt.Sprintf("HTTP %d: %s", e.Status, e.Message)
}

// do sends a JSON request and decodes a JSON answer into out (when not
// nil). A non-2xx answer is an *apiError.
func (c *apiClient) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var env struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		e := &apiError{Status: resp.StatusCode, Message: strings.TrimSpace(string(data))}
		if json.Unmarshal(data, &env) == nil && env.Error.Code != "" {
			e.Code, e.Message = env.Error.Code, env.Error.Message
		}
		return e
	}
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
		}
	}
	return nil
}

// instanceRow is the part of the v1 instance the CLI shows.
type instanceRow struct {
	ID                    string  `json:"id"`
	HostID                string  `json:"host_id"`
	Name                  string  `json:"name"`
	AccountToolInstanceID *string `json:"account_tool_instance_id"`
	ContainerName         string  `json:"container_name"`
	ContainerID           string  `json:"container_id"`
	Image                 string  `json:"image"`
	DesiredState          string  `json:"desired_state"`
	DTMAStatus            string  `json:"dtma_status"`
	DockerStatus          string  `json:"docker_status"`
	Drift                 bool    `json:"drift"`
	Ports                 []struct {
		ContainerPort int    `json:"container_port"`
		Protocol      string `json:"protocol"`
		HostPort      int    `json:"host_port"`
		HostIP        string `json:"host_ip"`
	} `json:"ports"`
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

func (r instanceRow) AccountID() string {
	if r.AccountToolInstanceID == nil {
		return ""
	}
	return *r.AccountToolInstanceID
}

func (r instanceRow) ShortContainerID() string {
	if len(r.ContainerID) > 12 {
		return r.ContainerID[:12]
	}
	return r.ContainerID
}
