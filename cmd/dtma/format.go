package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"text/template"

	"github.com/spf13/cobra"
)

// Output options shared by the listing commands, after the Docker CLI:
// a table by default, -o json for JSON, --format for a Go template per
// row, -q for identifiers only.
type outputOptions struct {
	output string
	format string
	quiet  bool
}

func addOutputFlags(cmd *cobra.Command, o *outputOptions) {
	cmd.Flags().StringVarP(&o.output, "output", "o", "table", "output format: table or json")
	cmd.Flags().StringVar(&o.format, "format", "", "Go template for each row, e.g. '{{.Name}} {{.DTMAStatus}}'")
	cmd.Flags().BoolVarP(&o.quiet, "quiet", "q", false, "only print instance names")
}

// column is one table column: a header and how to read a row.
type column struct {
	header string
	value  func(instanceRow) string
}

func writeInstances(w io.Writer, o outputOptions, rows []instanceRow, cols []column) error {
	switch {
	case o.quiet:
		for _, r := range rows {
			fmt.Fprintln(w, r.Name)
		}
		return nil
	case o.format != "":
		tmpl, err := template.New("row").Parse(o.format)
		if err != nil {
			return fmt.Errorf("--format: %w", err)
		}
		for _, r := range rows {
			if err := tmpl.Execute(w, r); err != nil {
				return fmt.Errorf("--format: %w", err)
			}
			fmt.Fprintln(w)
		}
		return nil
	case o.output == "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if rows == nil {
			rows = []instanceRow{}
		}
		return enc.Encode(rows)
	case o.output == "table" || o.output == "":
		tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
		headers := make([]string, len(cols))
		for i, c := range cols {
			headers[i] = c.header
		}
		fmt.Fprintln(tw, strings.Join(headers, "\t"))
		for _, r := range rows {
			vals := make([]string, len(cols))
			for i, c := range cols {
				vals[i] = c.value(r)
			}
			fmt.Fprintln(tw, strings.Join(vals, "\t"))
		}
		return tw.Flush()
	}
	return fmt.Errorf("--output: must be table or json")
}

var instanceColumns = []column{
	{"NAME", func(r instanceRow) string { return r.Name }},
	{"ACCOUNT TOOL INSTANCE", func(r instanceRow) string { return r.AccountID() }},
	{"CONTAINER", func(r instanceRow) string { return r.ShortContainerID() }},
	{"IMAGE", func(r instanceRow) string { return r.Image }},
	{"STATUS", func(r instanceRow) string {
		if r.Drift {
			return r.DTMAStatus + " (drift)"
		}
		return r.DTMAStatus
	}},
	{"DOCKER", func(r instanceRow) string { return r.DockerStatus }},
	{"PORTS", func(r instanceRow) string { return r.PortsString() }},
}
