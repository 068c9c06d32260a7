package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/agentopia/dtma"
	"github.com/agentopia/dtma/internal/pgtest"
	"github.com/agentopia/dtma/postgres"
	"github.com/agentopia/dtma/registrytest"
)

// PostgreSQL: backup writes this host's rows (not another host's) as an
// export; restore is refused while the serve lock of this host is held,
// and then replaces exactly this host's rows, leaving other hosts' alone.
func TestBackupRestorePostgres(t *testing.T) {
	srv := pgtest.Start(t)
	dsn := srv.CreateDatabase(t, t.Name())
	ctx := context.Background()
	open := func(host string) dtma.Registry {
		reg, err := postgres.Open(ctx, dsn, host, postgres.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return reg
	}
	h1, h2 := open("h1"), open("h2")
	defer h2.Close()
	for _, n := range []string{"a", "b"} {
		if err := h1.CreateInstance(ctx, registrytest.NewInstance(n)); err != nil {
			t.Fatal(err)
		}
	}
	if err := h2.CreateInstance(ctx, registrytest.NewInstance("other-host")); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	env := map[string]string{"DTMA_DATA_DIR": dir, "DTMA_HOST_ID": "h1", "DTMA_REGISTRY_URL": dsn, "DTMA_LOG_LEVEL": "error"}
	backup := filepath.Join(t.TempDir(), "h1.json")
	if _, errOut, err := runCLI(t, env, "backup", backup); err != nil {
		t.Fatalf("backup: %v %s", err, errOut)
	}
	var f exportFile
	b, _ := os.ReadFile(backup)
	if err := json.Unmarshal(b, &f); err != nil || f.HostID != "h1" || len(f.Instances) != 2 {
		t.Fatalf("backup file: %v, host %q, %d rows", err, f.HostID, len(f.Instances))
	}
	// After the backup: c added, a removed.
	if err := h1.CreateInstance(ctx, registrytest.NewInstance("c")); err != nil {
		t.Fatal(err)
	}
	rows, _ := h1.FindInstances(ctx, dtma.InstanceFilter{})
	for _, r := range rows {
		if r.Name == "a" {
			if err := h1.DeleteInstance(ctx, r.ID); err != nil {
				t.Fatal(err)
			}
		}
	}
	h1.Close()

	lock, err := lockFile(filepath.Join(dir, "serve-h1.lock"), false)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := runCLI(t, env, "restore", backup); err == nil || !strings.Contains(err.Error(), "an agent is serving") {
		t.Fatalf("restore while served: %v", err)
	}
	lock.Close()
	if _, errOut, err := runCLI(t, env, "restore", backup); err != nil {
		t.Fatalf("restore: %v %s", err, errOut)
	}
	names := func(reg dtma.Registry) string {
		rows, err := reg.FindInstances(ctx, dtma.InstanceFilter{})
		if err != nil {
			t.Fatal(err)
		}
		var n []string
		for _, r := range rows {
			n = append(n, r.Name)
		}
		sort.Strings(n)
		return strings.Join(n, ",")
	}
	h1 = open("h1")
	defer h1.Close()
	if got := names(h1); got != "a,b" {
		t.Errorf("h1 after restore: %s, want a,b", got)
	}
	if got := names(h2); got != "other-host" {
		t.Errorf("h2 after h1's restore: %s, want other-host", got)
	}
}
