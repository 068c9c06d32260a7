package main

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/agentopia/dtma"
	dtmahttp "github.com/agentopia/dtma/http"
	"github.com/spf13/cobra"
)

// mappingEntry is one row of the backend's export: which instance a legacy
// container is.
type mappingEntry struct {
	AccountToolInstanceID string `json:"account_tool_instance_id"`
	InstanceNameOnToolbox string `json:"instance_name_on_toolbox"`
	DockerImageURL        string `json:"docker_image_url"`
}

func newMigrateCommand(s *streams) *cobra.Command {
	var mapping string
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "migrate --mapping FILE [--dry-run]",
		Short: "Bring the legacy agent's containers under management without restarting them",
		Long: `Read a mapping exported from the backend (a JSON array, or CSV with a header,
with account_tool_instance_id, instance_name_on_toolbox, docker_image_url) and
ask the running agent (DTMA_URL, DTMA_TOKEN) to adopt each legacy container,
found by name. Nothing is recreated or restarted. Running it again changes
nothing. Containers that cannot be found, or that differ from the mapping,
are reported and left alone; the exit code is then 2.

Every entry needs docker_image_url: a container is adopted only when it
runs that image. The agent serves adoption only as DTMA_ADOPT allows (by
default to loopback peers), so run this on the agent's host against
http://127.0.0.1:<port>; a refusal stops the run with exit code 1.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if mapping == "" {
				return fmt.Errorf("--mapping is required")
			}
			entries, err := readMapping(mapping)
			if err != nil {
				return err
			}
			c, err := newAPIClient(cmd, s)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(s.out, 0, 0, 3, ' ', 0)
			fmt.Fprintln(tw, "NAME\tACCOUNT TOOL INSTANCE\tACTION\tDETAIL")
			counts := map[string]int{}
			for _, e := range entries {
				res, err := c.Adopt(cmd.Context(), dtmahttp.AdoptRequest{
					Name:                  e.InstanceNameOnToolbox,
					AccountToolInstanceID: e.AccountToolInstanceID,
					Image:                 e.DockerImageURL,
					DryRun:                dryRun,
				})
				if api := (*dtmahttp.APIError)(nil); errors.As(err, &api) && api.Err.Code == dtma.EFORBIDDEN {
					// Adoption is not served to this client: every
					// further entry would be refused the same way.
					_ = tw.Flush()
					return fmt.Errorf("the agent refuses adoption: %s", api.Err.Message)
				}
				detail := res.Reason
				if err != nil {
					res.Action, detail = "error", cliMessage(err)
				} else if res.Instance != nil && detail == "" {
					detail = "container " + res.Instance.ContainerName + " (" + instanceRow{*res.Instance}.ShortContainerID() + ")"
				}
				action := res.Action
				if dryRun && action == "adopt" {
					action = "would adopt"
				}
				counts[res.Action]++
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", e.InstanceNameOnToolbox, e.AccountToolInstanceID, action, detail)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			verb := "adopted"
			if dryRun {
				verb = "would adopt"
			}
			fmt.Fprintf(s.out, "%s %d, unchanged %d, skipped %d, errors %d\n", verb, counts["adopt"], counts["unchanged"], counts["skip"], counts["error"])
			if counts["skip"]+counts["error"] > 0 {
				return &exitError{code: 2, err: fmt.Errorf("%d of %d entries were not migrated", counts["skip"]+counts["error"], len(entries))}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&mapping, "mapping", "", "mapping file: JSON array or CSV")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "print what would be done; change nothing")
	addClientFlags(cmd)
	return cmd
}

// readMapping reads a JSON array or a CSV file with a header row.
func readMapping(path string) ([]mappingEntry, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--mapping: %w", err)
	}
	trimmed := bytes.TrimSpace(data)
	var entries []mappingEntry
	if bytes.HasPrefix(trimmed, []byte("[")) {
		if err := json.Unmarshal(trimmed, &entries); err != nil {
			return nil, fmt.Errorf("--mapping %s: not a JSON array of entries: %w", path, err)
		}
	} else {
		entries, err = readMappingCSV(bytes.NewReader(trimmed))
		if err != nil {
			return nil, fmt.Errorf("--mapping %s: %w", path, err)
		}
	}
	for i, e := range entries {
		if strings.TrimSpace(e.InstanceNameOnToolbox) == "" {
			return nil, fmt.Errorf("--mapping %s: entry %d: instance_name_on_toolbox is required", path, i+1)
		}
		if strings.TrimSpace(e.DockerImageURL) == "" {
			return nil, fmt.Errorf("--mapping %s: entry %d (%s): docker_image_url is required", path, i+1, e.InstanceNameOnToolbox)
		}
	}
	return entries, nil
}

func readMappingCSV(r io.Reader) ([]mappingEntry, error) {
	cr := csv.NewReader(r)
	cr.TrimLeadingSpace = true
	header, err := cr.Read()
	if err != nil {
		return nil, fmt.Errorf("CSV header: %w", err)
	}
	idx := map[string]int{}
	for i, h := range header {
		idx[strings.TrimSpace(strings.ToLower(h))] = i
	}
	for _, want := range []string{"instance_name_on_toolbox", "account_tool_instance_id", "docker_image_url"} {
		if _, ok := idx[want]; !ok {
			return nil, fmt.Errorf("CSV header lacks column %s", want)
		}
	}
	var out []mappingEntry
	for line := 2; ; line++ {
		rec, err := cr.Read()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("CSV line %d: %w", line, err)
		}
		out = append(out, mappingEntry{
			AccountToolInstanceID: strings.TrimSpace(rec[idx["account_tool_instance_id"]]),
			InstanceNameOnToolbox: strings.TrimSpace(rec[idx["instance_name_on_toolbox"]]),
			DockerImageURL:        strings.TrimSpace(rec[idx["docker_image_url"]]),
		})
	}
}
