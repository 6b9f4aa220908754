package postgres_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/engine"
	"github.com/dlmhq/dlm/postgres"
)

// BenchmarkAcquireRelease measures acquire+release cycles through the engine
// on one PostgreSQL store: one client, and 64 concurrent clients on distinct
// names, on one instance and on three instances sharing the database; and 64
// clients whose every acquire carries a fresh idempotency key, as the Go
// client sends (a lookup, and a round trip, more per acquire).
//
//	DLM_TEST_POSTGRES=... go test -run '^$' -bench AcquireRelease -benchtime 3s ./postgres/
func BenchmarkAcquireRelease(b *testing.B) {
	for _, bc := range []struct {
		clients, instances int
		idem               bool
	}{{1, 1, false}, {64, 1, false}, {64, 1, true}, {64, 3, false}} {
		name := fmt.Sprintf("clients=%d/instances=%d", bc.clients, bc.instances)
		if bc.idem {
			name += "/idempotent"
		}
		b.Run(name, func(b *testing.B) {
			benchCycles(b, bc.clients, bc.instances, bc.idem)
		})
	}
}

func benchCycles(b *testing.B, clients, instances int, idem bool) {
	url, schema := freshSchema(b)
	var engines []*engine.Engine
	for range instances {
		s := open(b, url, schema, postgres.Options{MaxConns: int32(max(4, 32/instances))})
		e := engine.New(s, engine.Options{})
		b.Cleanup(e.Close)
		engines = append(engines, e)
	}
	ctx := b.Context()
	var (
		wg   sync.WaitGroup
		next = make(chan struct{}, clients)
	)
	b.ResetTimer()
	start := time.Now()
	go func() {
		for range b.N {
			next <- struct{}{}
		}
		close(next)
	}()
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e := engines[c%len(engines)]
			r := engine.AcquireRequest{Tenant: "bench", Key: dlm.Key{Namespace: "bench", Name: fmt.Sprint("c/", c)}, HolderID: "h", TTL: time.Minute}
			for i := 0; ; i++ {
				if _, ok := <-next; !ok {
					return
				}
				if idem {
					r.IdempotencyKey = fmt.Sprint(c, "/", i)
				}
				l, _, err := e.Acquire(ctx, r)
				if err != nil {
					b.Errorf("acquire: %v", err)
					return
				}
				if _, err := e.Release(ctx, "bench", l.ID); err != nil {
					b.Errorf("release: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "cycles/s")
}
