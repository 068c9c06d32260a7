package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/agentopia/dtma"
	"github.com/agentopia/dtma/registrytest"
	"github.com/agentopia/dtma/sqlite"
)

// A backup taken while another process-like writer inserts rows is a
// consistent snapshot: it opens, passes the integrity check, and holds at
// least the rows committed before it started and at most those committed
// when it ended. A restore is refused while the serve lock is held, and
// afterwards the registry holds exactly the backup's rows.
func TestBackupDuringWritesAndRestore(t *testing.T) {
	dir := t.TempDir()
	env := map[string]string{"DTMA_DATA_DIR": dir, "DTMA_HOST_ID": "h1", "DTMA_LOG_LEVEL": "error"}
	ctx := context.Background()
	reg, err := sqlite.Open(ctx, filepath.Join(dir, "dtma.db"), "h1")
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()

	var committed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	var writeErr error
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := reg.CreateInstance(ctx, registrytest.NewInstance(fmt.Sprintf("tool-%d", i))); err != nil {
				writeErr = err
				return
			}
			committed.Add(1)
		}
	}()
	// Let the writer get going (a condition, not a sleep).
	for committed.Load() < 20 {
		if writeErr != nil {
			t.Fatal(writeErr)
		}
	}
	backup := filepath.Join(t.TempDir(), "backup.db")
	before := committed.Load()
	_, errOut, err := runCLI(t, env, "backup", backup)
	after := committed.Load()
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("backup: %v (%s)", err, errOut)
	}
	if writeErr != nil {
		t.Fatalf("the writer failed during the backup: %v", writeErr)
	}
	st, err := os.Stat(backup)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v, mode %v; want 0600", err, st)
	}
	snap, err := sqlite.Open(ctx, backup, "h1")
	if err != nil {
		t.Fatalf("the backup does not open: %v", err)
	}
	rows, err := snap.FindInstances(ctx, dtma.InstanceFilter{})
	snap.Close()
	if err != nil {
		t.Fatal(err)
	}
	if n := int64(len(rows)); n < before || n > after+1 {
		t.Fatalf("backup holds %d rows; %d were committed before it and %d after", n, before, after)
	}
	all, _ := reg.FindInstances(ctx, dtma.InstanceFilter{})
	if len(all) <= len(rows) {
		t.Fatalf("the writer added nothing after the backup (%d rows, backup %d): the test shows nothing", len(all), len(rows))
	}
	// Remove the backup's -wal/-shm left by the Open above: a restore
	// must work from the file alone.
	os.Remove(backup + "-wal")
	os.Remove(backup + "-shm")

	// While an agent serves (the shared serve lock is held) restore is refused.
	lock, err := lockFile(filepath.Join(dir, "dtma.db.lock"), false)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = runCLI(t, env, "restore", backup)
	if !errors.Is(err, errServing) || !strings.Contains(err.Error(), "stop it first") {
		t.Fatalf("restore while served: %v, want refused", err)
	}
	if got, _ := reg.FindInstances(ctx, dtma.InstanceFilter{}); len(got) != len(all) {
		t.Fatalf("a refused restore changed the registry: %d rows, was %d", len(got), len(all))
	}
	lock.Close()
	reg.Close()

	if _, errOut, err := runCLI(t, env, "restore", backup); err != nil {
		t.Fatalf("restore: %v (%s)", err, errOut)
	}
	reg2, err := sqlite.Open(ctx, filepath.Join(dir, "dtma.db"), "h1")
	if err != nil {
		t.Fatal(err)
	}
	defer reg2.Close()
	got, err := reg2.FindInstances(ctx, dtma.InstanceFilter{})
	if err != nil || len(got) != len(rows) {
		t.Fatalf("after restore: %d rows (%v), want the backup's %d", len(got), err, len(rows))
	}
	// While restore holds the lock, serve cannot take it.
	x, err := lockFile(filepath.Join(dir, "dtma.db.lock"), true)
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	if _, err := lockFile(filepath.Join(dir, "dtma.db.lock"), false); err == nil || !strings.Contains(err.Error(), "restore") {
		t.Errorf("serve lock during a restore: %v, want refused", err)
	}
}

// An export backup (what PostgreSQL gets) replaces this host's rows and
// refuses another host's backup.
func TestRestoreExport(t *testing.T) {
	dir := t.TempDir()
	env := map[string]string{"DTMA_DATA_DIR": dir, "DTMA_HOST_ID": "h1", "DTMA_LOG_LEVEL": "error"}
	ctx := context.Background()
	reg, err := sqlite.Open(ctx, filepath.Join(dir, "dtma.db"), "h1")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"a", "b"} {
		if err := reg.CreateInstance(ctx, registrytest.NewInstance(n)); err != nil {
			t.Fatal(err)
		}
	}
	reg.Close()
	exp := filepath.Join(t.TempDir(), "export.json")
	if _, _, err := runCLI(t, env, "registry", "export", "-o", exp); err != nil {
		t.Fatal(err)
	}
	reg, _ = sqlite.Open(ctx, filepath.Join(dir, "dtma.db"), "h1")
	if err := reg.CreateInstance(ctx, registrytest.NewInstance("c")); err != nil {
		t.Fatal(err)
	}
	reg.Close()
	if _, errOut, err := runCLI(t, env, "restore", exp); err != nil {
		t.Fatalf("restore: %v (%s)", err, errOut)
	}
	reg, _ = sqlite.Open(ctx, filepath.Join(dir, "dtma.db"), "h1")
	defer reg.Close()
	rows, _ := reg.FindInstances(ctx, dtma.InstanceFilter{})
	var names []string
	for _, r := range rows {
		names = append(names, r.Name)
	}
	if strings.Join(names, ",") != "a,b" && strings.Join(names, ",") != "b,a" {
		t.Errorf("after restoring the export: %q, want a and b", names)
	}
	env["DTMA_HOST_ID"] = "h2"
	if _, _, err := runCLI(t, env, "restore", exp); err == nil || !strings.Contains(err.Error(), "backup of host h1") {
		t.Errorf("restore of another host's export: %v", err)
	}
}
