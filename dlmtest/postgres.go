package dlmtest

import (
	"context"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// DefaultPostgresURL is the local server that scripts/postgres.sh sets up.
const DefaultPostgresURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

var (
	pgOnce sync.Once
	pgErr  error
)

// PostgresURL returns the PostgreSQL server the tests share:
// DLM_TEST_POSTGRES, or DefaultPostgresURL. The first call checks that it
// answers. When it does not, the test is skipped, except in CI (CI=true),
// where a skip would hide that the PostgreSQL code went untested and the
// test fails instead.
//
// In CI, or when DLM_TEST_POSTGRES names a server, the check waits up to a
// minute for it: go test runs packages in parallel, and the postgres
// package's restart test may have it down for a moment.
func PostgresURL(t testing.TB) string {
	t.Helper()
	u := os.Getenv("DLM_TEST_POSTGRES")
	patient := u != "" || os.Getenv("CI") == "true"
	if u == "" {
		u = DefaultPostgresURL
	}
	pgOnce.Do(func() {
		for deadline := time.Now().Add(time.Minute); ; {
			pgErr = pingPostgres(u)
			if pgErr == nil || !patient || time.Now().After(deadline) {
				return
			}
			time.Sleep(500 * time.Millisecond)
		}
	})
	if pgErr != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("PostgreSQL at %s does not answer in CI, where the PostgreSQL tests must run (scripts/postgres.sh starts it): %v", u, pgErr)
		}
		t.Skipf("PostgreSQL at %s does not answer (set DLM_TEST_POSTGRES, or run scripts/postgres.sh): %v", u, pgErr)
	}
	return u
}

// pingPostgres connects to url once.
func pingPostgres(url string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	return conn.Close(ctx)
}
