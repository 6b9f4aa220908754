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

// BenchmarkHandoff measures durable handoffs of one lock through the engine:
// 32 clients each take it with a blocking acquire and release it at once, so
// each release grants the next waiter (the contended workload of dlm bench,
// without HTTP).
func BenchmarkHandoff(b *testing.B) {
	s, err := sqlite.Open(filepath.Join(b.TempDir(), "dlm.db"))
	if err != nil {
		b.Fatal(err)
	}
	e := engine.New(s, engine.Options{})
	defer s.Close()
	defer e.Close()
	r := engine.AcquireRequest{Tenant: "t", Key: dlm.Key{Namespace: "t", Name: "handoff"}, HolderID: "h", Wait: time.Minute}
	b.SetParallelism(max(1, 32/runtime.GOMAXPROCS(0)))
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			l, _, err := e.Acquire(b.Context(), r)
			if err == nil {
				_, err = e.Release(b.Context(), "t", l.ID)
			}
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "handoffs/s")
}

// BenchmarkHold measures taking leases on distinct new names and keeping
// them, and the Go heap each held lease costs.
func BenchmarkHold(b *testing.B) {
	s, err := sqlite.Open(filepath.Join(b.TempDir(), "dlm.db"))
	if err != nil {
		b.Fatal(err)
	}
	e := engine.New(s, engine.Options{MaxLeasesPerTenant: 1 << 40})
	defer s.Close()
	defer e.Close()
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	var next atomic.Int64
	b.SetParallelism(max(1, 64/runtime.GOMAXPROCS(0)))
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r := engine.AcquireRequest{Tenant: "t", Key: dlm.Key{Namespace: "t", Name: fmt.Sprint("hold/", next.Add(1))}, HolderID: "h", TTL: time.Hour}
			if _, _, err := e.Acquire(b.Context(), r); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "leases/s")
	b.StopTimer()
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/float64(b.N), "heap-B/lease")
}
