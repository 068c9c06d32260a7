package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"
	"time"

	"github.com/agentopia/dtma"
	"github.com/spf13/cobra"
)

func newRegistryCommand(s *streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "registry",
		Short: "Export or import the registry directly (the one `serve` would open)",
		Long: `Work on the registry that the same settings as ` + "`serve`" + ` select
(DTMA_REGISTRY_URL or DTMA_DATA_DIR, and DTMA_HOST_ID), without a running agent.
Exports hold env values: keep them as secret as the registry itself.`,
	}
	cmd.AddCommand(newRegistryExportCommand(s), newRegistryImportCommand(s))
	return cmd
}

// exportFormat names the export file's format and version.
const exportFormat = "dtma-registry/v1"

type exportFile struct {
	Format     string           `json:"format"`
	HostID     string           `json:"host_id"`
	ExportedAt time.Time        `json:"exported_at"`
	Instances  []exportInstance `json:"instances"`
}

// exportInstance is every stored field of a registry row.
type exportInstance struct {
	ID                    string            `json:"id"`
	HostID                string            `json:"host_id"`
	Name                  string            `json:"name"`
	AccountToolInstanceID string            `json:"account_tool_instance_id,omitempty"`
	ContainerName         string            `json:"container_name"`
	ContainerID           string            `json:"container_id,omitempty"`
	Spec                  dtma.Spec         `json:"spec"`
	SpecHash              string            `json:"spec_hash"`
	Ports                 []dtma.Port       `json:"ports"`
	DesiredState          dtma.DesiredState `json:"desired_state"`
	Status                dtma.Status       `json:"dtma_status"`
	PendingOp             dtma.Op           `json:"pending_op,omitempty"`
	Tracking              dtma.Tracking     `json:"tracking"`
	LastError             string            `json:"last_error,omitempty"`
	Observed              dtma.Observed     `json:"observed"`
	CreatedAt             time.Time         `json:"created_at"`
	UpdatedAt             time.Time         `json:"updated_at"`
}

func toExport(i *dtma.Instance) exportInstance {
	return exportInstance{
		ID: i.ID, HostID: i.HostID, Name: i.Name, AccountToolInstanceID: i.AccountToolInstanceID,
		ContainerName: i.ContainerName, ContainerID: i.ContainerID, Spec: i.Spec, SpecHash: i.SpecHash,
		Ports: i.Ports, DesiredState: i.DesiredState, Status: i.Status, PendingOp: i.PendingOp,
		Tracking: i.Tracking, LastError: i.LastError, Observed: i.Observed,
		CreatedAt: i.CreatedAt.UTC(), UpdatedAt: i.UpdatedAt.UTC(),
	}
}

func fromExport(e exportInstance) *dtma.Instance {
	inst := &dtma.Instance{
		ID: e.ID, HostID: e.HostID, Name: e.Name, AccountToolInstanceID: e.AccountToolInstanceID,
		ContainerName: e.ContainerName, Spec: e.Spec, SpecHash: e.SpecHash,
		Ports: e.Ports, DesiredState: e.DesiredState, Status: e.Status, PendingOp: e.PendingOp,
		Tracking: e.Tracking, LastError: e.LastError, Observed: e.Observed,
		CreatedAt: e.CreatedAt, UpdatedAt: e.UpdatedAt,
	}
	inst.ContainerID = e.ContainerID
	return inst
}

// openConfiguredRegistry loads the registry settings and opens the store.
func openConfiguredRegistry(ctx context.Context, cmd *cobra.Command, s *streams) (dtma.Registry, error) {
	c, err := loadConfig(cmd, s)
	if err != nil {
		return nil, err
	}
	hostID, err := resolveHostID(c)
	if err != nil {
		return nil, err
	}
	reg, _, err := openRegistry(ctx, c, hostID, newLogger(c, s), false)
	return reg, err
}

func newRegistryExportCommand(s *streams) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "export [--output FILE]",
		Short: "Write this host's registry rows as JSON (stdout by default)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			reg, err := openConfiguredRegistry(cmd.Context(), cmd, s)
			if err != nil {
				return err
			}
			defer reg.Close()
			rows, err := reg.FindInstances(cmd.Context(), dtma.InstanceFilter{})
			if err != nil {
				return fmt.Errorf("read registry: %w", err)
			}
			f := exportFile{Format: exportFormat, HostID: reg.HostID(), ExportedAt: time.Now().UTC(), Instances: []exportInstance{}}
			for _, r := range rows {
				f.Instances = append(f.Instances, toExport(r))
			}
			var w io.Writer = s.out
			if output != "" && output != "-" {
				file, err := os.OpenFile(output, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
				if err != nil {
					return fmt.Errorf("--output: %w", err)
				}
				defer file.Close()
				w = file
			}
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			if err := enc.Encode(f); err != nil {
				return fmt.Errorf("write export: %w", err)
			}
			fmt.Fprintf(s.err, "exported %d instances of host %s\n", len(f.Instances), f.HostID)
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "write to FILE (mode 0600) instead of stdout")
	addSettings(cmd.Flags(), registrySettings...)
	return cmd
}

func newRegistryImportCommand(s *streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "import FILE",
		Short: "Add the rows of an export to this host's registry (idempotent)",
		Long: `Add the rows of an export to the registry. Rows already present and identical
are left alone, so importing twice changes nothing. When any row conflicts
(same id with other content, or a name, account id or container name used by
another row) nothing is written and the conflicts are listed; exit code 2.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			data, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			var f exportFile
			if err := json.Unmarshal(data, &f); err != nil {
				return fmt.Errorf("%s: not a DTMA registry export: %w", args[0], err)
			}
			if f.Format != exportFormat {
				return fmt.Errorf("%s: format %q is not %q", args[0], f.Format, exportFormat)
			}
			reg, err := openConfiguredRegistry(cmd.Context(), cmd, s)
			if err != nil {
				return err
			}
			defer reg.Close()
			return importRows(cmd.Context(), reg, f, s)
		},
	}
	addSettings(cmd.Flags(), registrySettings...)
	return cmd
}

// importRows checks what only the file can tell — the host, row validity,
// ids already stored — and then writes the new rows in one atomic batch
// (Registry.CreateInstances), whose uniqueness checks are the store's own:
// one conflict and nothing is written.
func importRows(ctx context.Context, reg dtma.Registry, f exportFile, s *streams) error {
	var create []*dtma.Instance
	var conflicts []string
	unchanged := 0
	for i, e := range f.Instances {
		if e.HostID != reg.HostID() {
			conflicts = append(conflicts, fmt.Sprintf("%s: belongs to host %s, this registry is host %s (set DTMA_HOST_ID)", e.Name, e.HostID, reg.HostID()))
			continue
		}
		if problem := invalidRow(e); problem != "" {
			conflicts = append(conflicts, fmt.Sprintf("row %d (%q): invalid: %s", i+1, e.Name, problem))
			continue
		}
		existing, err := reg.FindInstanceByID(ctx, e.ID)
		switch {
		case err == nil:
			if reflect.DeepEqual(dtma.StoredForm(existing), dtma.StoredForm(fromExport(e))) {
				unchanged++
			} else {
				conflicts = append(conflicts, fmt.Sprintf("%s: id %s exists with other content", e.Name, e.ID))
			}
			continue
		case dtma.ErrorCode(err) != dtma.ENOTFOUND:
			return fmt.Errorf("read registry: %w", err)
		}
		create = append(create, fromExport(e))
	}
	if len(conflicts) == 0 && len(create) > 0 {
		if err := reg.CreateInstances(ctx, create); dtma.ErrorCode(err) == dtma.ECONFLICT || dtma.ErrorCode(err) == dtma.EINVALID {
			conflicts = append(conflicts, dtma.ErrorMessage(err))
		} else if err != nil {
			return fmt.Errorf("import: %w", err)
		}
	}
	if len(conflicts) > 0 {
		for _, c := range conflicts {
			fmt.Fprintln(s.err, "conflict:", c)
		}
		return &exitError{code: 2, err: fmt.Errorf("import refused: %d conflicting rows; nothing written", len(conflicts))}
	}
	fmt.Fprintf(s.out, "imported %d, unchanged %d\n", len(create), unchanged)
	return nil
}

// invalidRow says what makes e unfit for a registry, or "".
func invalidRow(e exportInstance) string {
	switch {
	case !dtma.IsUUID(e.ID):
		return "id must be a UUID"
	case strings.TrimSpace(e.Name) == "":
		return "name must not be empty"
	case strings.TrimSpace(e.ContainerName) == "":
		return "container_name must not be empty"
	case e.AccountToolInstanceID != "" && !dtma.IsUUID(e.AccountToolInstanceID):
		return "account_tool_instance_id must be a UUID"
	case strings.TrimSpace(e.Spec.Image) == "":
		return "spec.image must not be empty"
	}
	return ""
}
