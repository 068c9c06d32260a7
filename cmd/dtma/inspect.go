package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"text/template"

	dtmahttp "github.com/agentopia/dtma/http"
	"github.com/spf13/cobra"
)

type inspectOptions struct {
	client *dtmahttp.Client
	out    io.Writer
	refs   []string
	format string
}

func newInspectCommand(s *streams) *cobra.Command {
	var o inspectOptions
	cmd := &cobra.Command{
		Use:   "inspect REF [REF...]",
		Short: "Show instances in full (by name, account tool instance id or id)",
		Args:  usageArgs(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			var err error
			if o.client, err = newAPIClient(cmd, s); err != nil {
				return err
			}
			o.out, o.refs = s.out, args
			return runInspect(cmd.Context(), o)
		},
	}
	cmd.Flags().StringVarP(&o.format, "format", "f", "", "Go template for each instance, or 'json' for one JSON object per line")
	addClientFlags(cmd)
	return cmd
}

// runInspect prints the instances as a JSON array (the v1 wire shape), or
// each through --format. It fetches every ref first: any error (the
// agent's, e.g. not_found) prints nothing.
func runInspect(ctx context.Context, o inspectOptions) error {
	var tmpl *template.Template
	if o.format != "" && o.format != "json" {
		var err error
		if tmpl, err = template.New("inspect").Funcs(template.FuncMap{"json": toJSON}).Parse(o.format); err != nil {
			return usageError(fmt.Errorf("--format: %w", err))
		}
	}
	rows := make([]instanceRow, 0, len(o.refs))
	for _, ref := range o.refs {
		inst, err := o.client.Instance(ctx, ref)
		if err != nil {
			return fmt.Errorf("%s: %w", ref, err)
		}
		rows = append(rows, instanceRow{inst})
	}
	switch {
	case o.format == "json":
		for _, r := range rows {
			b, _ := json.Marshal(r)
			fmt.Fprintln(o.out, string(b))
		}
		return nil
	case tmpl != nil:
		for _, r := range rows {
			if err := tmpl.Execute(o.out, r); err != nil {
				return fmt.Errorf("--format: %w", err)
			}
			fmt.Fprintln(o.out)
		}
		return nil
	}
	enc := json.NewEncoder(o.out)
	enc.SetIndent("", "    ")
	return enc.Encode(rows)
}

// toJSON is the templates' json function, as in the Docker CLI.
func toJSON(v any) (string, error) {
	b, err := json.Marshal(v)
	return string(b), err
}
