package main

import (
	"context"
	"fmt"
	"io"

	dtmahttp "github.com/agentopia/dtma/http"
	"github.com/spf13/cobra"
)

// logsOptions are `dtma logs`'s inputs; tail 0 means all lines.
type logsOptions struct {
	client *dtmahttp.Client
	out    io.Writer
	ref    string
	tail   int
	follow bool
}

func newLogsCommand(s *streams) *cobra.Command {
	var o logsOptions
	var tail string
	cmd := &cobra.Command{
		Use:   "logs [-f] [--tail N] REF",
		Short: "Print an instance's output; -f follows it until interrupted",
		Args:  usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			if tail != "all" {
				n, err := parseTail(tail)
				if err != nil {
					return usageError(err)
				}
				o.tail = n
			}
			var err error
			if o.client, err = newAPIClient(cmd, s); err != nil {
				return err
			}
			o.out, o.ref = s.out, args[0]
			return runLogs(cmd.Context(), o)
		},
	}
	cmd.Flags().BoolVarP(&o.follow, "follow", "f", false, "keep streaming new output (until Ctrl-C or the container stops)")
	cmd.Flags().StringVarP(&tail, "tail", "n", "all", "number of lines from the end, or all")
	addClientFlags(cmd)
	return cmd
}

func parseTail(v string) (int, error) {
	var n int
	if _, err := fmt.Sscanf(v, "%d", &n); err != nil || n < 0 || fmt.Sprint(n) != v {
		return 0, fmt.Errorf("--tail: must be a number of lines or all")
	}
	return n, nil
}

// runLogs copies the instance's output to out. A follow ended by ctx (an
// interrupt) is a success: the operator asked it to stop.
func runLogs(ctx context.Context, o logsOptions) error {
	rc, err := o.client.Logs(ctx, o.ref, o.tail, o.follow)
	if err != nil {
		return fmt.Errorf("%s: %w", o.ref, err)
	}
	defer rc.Close()
	_, err = io.Copy(o.out, rc)
	if err != nil && ctx.Err() != nil {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s: read logs: %w", o.ref, err)
	}
	return nil
}
