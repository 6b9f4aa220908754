package postgres_test

import (
	"context"
	"crypto/rand"
	"strings"
	"testing"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/dlmtest"
	"github.com/dlmhq/dlm/postgres"
	"github.com/dlmhq/dlm/storetest"
	"github.com/jackc/pgx/v5"
)

// freshSchema creates an empty schema for one test and drops it, with
// everything in it, when the test ends.
func freshSchema(t testing.TB) (url, schema string) {
	t.Helper()
	url = dlmtest.PostgresURL(t)
	schema = "dlmtest_" + strings.ToLower(rand.Text()[:10])
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connecting to %s: %v", url, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `CREATE SCHEMA `+schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Errorf("dropping schema %s: %v", schema, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, `DROP SCHEMA `+schema+` CASCADE`); err != nil {
			t.Errorf("dropping schema %s: %v", schema, err)
		}
	})
	return url, schema
}

// open opens a store on schema, to be closed at the end of the test.
func open(t testing.TB, url, schema string, opts postgres.Options) *postgres.Store {
	t.Helper()
	opts.Schema = schema
	s, err := postgres.Open(context.Background(), url, opts)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) func(dlm.Clock) dlm.Store {
		url, schema := freshSchema(t)
		return func(dlm.Clock) dlm.Store { // the database's clock decides
			s, err := postgres.Open(context.Background(), url, postgres.Options{Schema: schema, MaxConns: 4})
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
	}, false)
}

// adminConn returns a plain connection to the test database.
func adminConn(t testing.TB, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func TestMain(m *testing.M) { dlmtest.Main(m) }
