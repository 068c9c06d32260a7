package main

import (
	"context"
	"fmt"
	"io"
	"runtime"

	dtmahttp "github.com/agentopia/dtma/http"
	"github.com/spf13/cobra"
)

// versionOptions are `dtma version`'s inputs; client nil means --client.
type versionOptions struct {
	client *dtmahttp.Client
	out    io.Writer
}

func newVersionCommand(s *streams) *cobra.Command {
	var clientOnly bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the client's and the running agent's version",
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, args []string) error {
			o := versionOptions{out: s.out}
			if !clientOnly {
				c, err := newAPIClient(cmd, s)
				if err != nil {
					return err
				}
				o.client = c
			}
			return runVersion(cmd.Context(), o)
		},
	}
	cmd.Flags().BoolVar(&clientOnly, "client", false, "only the client's version (no agent needed)")
	addClientFlags(cmd)
	return cmd
}

// runVersion prints "client: VERSION (go, os/arch)" and, with a client,
// "agent: VERSION (host HOST)" from GET /v1/health. An unreachable agent
// prints the client line and returns the error.
func runVersion(ctx context.Context, o versionOptions) error {
	fmt.Fprintf(o.out, "client: %s (%s, %s/%s)\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	if o.client == nil {
		return nil
	}
	h, err := o.client.Health(ctx)
	if h.Version == "" && err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	fmt.Fprintf(o.out, "agent:  %s (host %s)\n", h.Version, h.HostID)
	return nil
}
