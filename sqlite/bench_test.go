package sqlite_test

import (
	"fmt"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/engine"
	"github.com/dlmhq/dlm/sqlite"
)

// BenchmarkAcquireRelease measures durable acquire+release cycles through the
// engine, each parallel client on its own lock (b.SetParallelism scales the
// clients: -cpu 2 with parallelism 32 is 64 clients).
func BenchmarkAcquireRelease(b *testing.B) {
	for _, clients := range []int{1, 64} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			s, err := sqlite.Open(filepath.Join(b.TempDir(), "dlm.db"))
			if err != nil {
				b.Fatal(err)
			}
			e := engine.New(s, engine.Options{})
			defer s.Close()
			defer e.Close()
			var next atomic.Int64
			b.SetParallelism(max(1, clients/runtime.GOMAXPROCS(0)))
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				name := fmt.Sprint("bench/", next.Add(1))
				r := engine.AcquireRequest{Tenant: "t", Key: dlm.Key{Namespace: "t", Name: name}, HolderID: "h"}
				for pb.Next() {
					l, _, err := e.Acquire(b.Context(), r)
					if err != nil {
						b.Error(err)
						return
					}
					if _, err := e.Release(b.Context(), "t", l.ID); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "cycles/s")
		})
	}
}
