package e2e

import (
	"context"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dtmahttp "github.com/agentopia/dtma/http"
)

// TestBackupUnderLoadRestoreReconcile: `dtma backup` runs while deploys
// write to the registry; `dtma restore` is refused while the agent serves;
// after the agent stops, the restore succeeds, and the restarted agent's
// first reconcile lists every container — those the backup knows and one
// deployed after it (adopted from its labels) — without restarting any.
func TestBackupUnderLoadRestoreReconcile(t *testing.T) {
	t.Parallel()
	a := StartAgent(t, AgentOptions{})
	img := EchoImage(t)
	c := a.Client()
	ctx := context.Background()
	deploy := func(name string) error {
		_, _, err := c.Deploy(ctx, dtmahttp.DeployRequest{Name: name, Image: img, PullPolicy: "never",
			Env: map[string]string{"ECHO": name}, Ports: nil})
		return err
	}
	s := uniqueSuffix()
	if err := deploy("base-" + s); err != nil {
		t.Fatal(err)
	}

	// The write load: deploys one after another until the backup is done.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var loadErr error
	var loaded atomic.Int32
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 12; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := deploy("load-" + strconv.Itoa(i) + "-" + s); err != nil {
				loadErr = err
				return
			}
			loaded.Add(1)
		}
	}()
	Eventually(t, time.Minute, "the write load under way", func() bool { return loaded.Load() >= 2 })
	backup := filepath.Join(t.TempDir(), "before.db")
	_, errOut, code := cli(t, a, "backup", backup)
	during := loaded.Load()
	close(stop)
	wg.Wait()
	if code != 0 {
		t.Fatalf("backup while serving: exit %d: %s", code, errOut)
	}
	if loadErr != nil {
		t.Fatalf("a deploy failed during the backup: %v", loadErr)
	}
	t.Logf("%d deploys before the backup returned, %d in all", during, loaded.Load())

	// Deployed after the backup: the backup does not know it.
	if err := deploy("after-" + s); err != nil {
		t.Fatal(err)
	}

	// Refused while the agent serves; nothing changes.
	if _, errOut, code := cli(t, a, "restore", backup); code != 1 || !strings.Contains(errOut, "an agent is serving this registry") {
		t.Fatalf("restore while serving: exit %d, %q", code, errOut)
	}
	list, err := c.Instances(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{} // name -> container id
	started := map[string]string{}
	for _, in := range list {
		Eventually(t, 30*time.Second, in.Name+" settled", func() bool {
			got, err := c.Instance(ctx, in.Name)
			return err == nil && got.DTMAStatus == "running" && got.ContainerID != ""
		})
		got, _ := c.Instance(ctx, in.Name)
		want[got.Name] = got.ContainerID
		started[got.Name] = startedAt(t, a, got.ContainerID)
	}
	if _, ok := want["after-"+s]; !ok || len(want) != int(loaded.Load())+2 {
		t.Fatalf("instances before the restore: %v (loaded %d)", want, loaded.Load())
	}

	a.Stop()
	if _, errOut, code := cli(t, a, "restore", backup); code != 0 {
		t.Fatalf("restore with the agent stopped: exit %d: %s", code, errOut)
	}
	begin := time.Now()
	a.start()
	waitRelist(t, a, begin)

	Eventually(t, 30*time.Second, "the registry agreeing with Docker after the restore", func() bool {
		list, err := c.Instances(ctx)
		if err != nil || len(list) != len(want) {
			return false
		}
		for _, in := range list {
			if want[in.Name] != in.ContainerID || in.DTMAStatus != "running" || in.Drift || in.PendingOp != "" {
				return false
			}
		}
		return true
	})
	for name, id := range want {
		if got := startedAt(t, a, id); got != started[name] {
			t.Errorf("%s was restarted by the reconcile after the restore: StartedAt %s -> %s", name, started[name], got)
		}
	}
	var ids, wantIDs []string
	ids = hostContainers(a)
	for _, id := range want {
		wantIDs = append(wantIDs, id)
	}
	sort.Strings(wantIDs)
	if strings.Join(ids, ",") != strings.Join(wantIDs, ",") {
		t.Errorf("the host's containers after the restore: %v, want exactly %v", ids, wantIDs)
	}
}
