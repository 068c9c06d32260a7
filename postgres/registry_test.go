package postgres_test

import (
	"context"
	"sync"
	"testing"

	"github.com/agentopia/dtma"
	"github.com/agentopia/dtma/internal/pgtest"
	"github.com/agentopia/dtma/postgres"
	"github.com/agentopia/dtma/registrytest"
)

// pg is the PostgreSQL server shared by this package's tests; tests that
// stop the server start their own.
var pg pgtest.Shared

func TestMain(m *testing.M) { pgtest.Main(m, &pg) }

// databases hands out one fresh database per test (or benchmark): every
// registry opened with the same tb shares it, as registrytest's open
// contract requires.
type databases struct {
	mu  sync.Mutex
	dsn map[testing.TB]string
}

// dsnFor returns tb's database, creating it (and its cleanup) on first use.
func (d *databases) dsnFor(tb testing.TB) string {
	tb.Helper()
	srv := pg.Server(tb) // may skip: not under d.mu
	d.mu.Lock()
	defer d.mu.Unlock()
	if dsn, ok := d.dsn[tb]; ok {
		return dsn
	}
	if d.dsn == nil {
		d.dsn = map[testing.TB]string{}
	}
	dsn := srv.CreateDatabase(tb, tb.Name())
	d.dsn[tb] = dsn
	tb.Cleanup(func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		delete(d.dsn, tb)
	})
	return dsn
}

// open opens a registry for hostID on tb's database, closed at cleanup.
func (d *databases) open(tb testing.TB, hostID string) *postgres.Registry {
	tb.Helper()
	r, err := postgres.Open(context.Background(), d.dsnFor(tb), hostID, postgres.Options{})
	if err != nil {
		tb.Fatalf("postgres.Open: %v", err)
	}
	tb.Cleanup(func() { _ = r.Close() })
	return r
}

func TestConformance(t *testing.T) {
	var d databases
	registrytest.Run(t, func(t *testing.T, hostID string) dtma.Registry { return d.open(t, hostID) })
}

func BenchmarkRegistry(b *testing.B) {
	var d databases
	registrytest.Bench(b, func(b *testing.B, hostID string) dtma.Registry { return d.open(b, hostID) })
}
