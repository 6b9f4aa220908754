package main

import (
	"context"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// The collector's headroom: Go's default (GOGC=100) lets the heap grow to
// twice the live heap before collecting. For a server holding many leases,
// whose live heap is mostly the lock table, that doubles the memory each
// held lease costs; for a server holding few, whose live heap is a few
// megabytes, it makes the collector run often on a lock path that
// allocates fast. So dlm serve paces the collector by the live heap
// instead: headroom of half the live heap (GOGC=50), but never less than
// gcMinHeadroom, so that a small heap is collected less often than by
// default. A GOGC given in the environment is left alone.
const (
	gcMinHeadroom = 16 << 20
	gcMinPercent  = 50  // half the live heap
	gcMaxPercent  = 800 // bounds the target while the live heap is tiny
	gcPaceEvery   = time.Second
)

// gcPercent is the GOGC for a live heap of live bytes.
func gcPercent(live uint64) int {
	if live == 0 {
		return gcMaxPercent
	}
	p := int(min(uint64(gcMaxPercent), gcMinHeadroom*100/live))
	return max(gcMinPercent, p)
}

// paceGC sets GOGC from the live heap every gcPaceEvery until ctx ends,
// then puts back the GOGC it found. It does nothing if the environment
// sets GOGC.
func paceGC(ctx context.Context) {
	if os.Getenv("GOGC") != "" {
		return
	}
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	pace := func() int {
		metrics.Read(sample)
		return gcPercent(sample[0].Value.Uint64())
	}
	last := pace()
	prev := debug.SetGCPercent(last)
	go func() {
		t := time.NewTicker(gcPaceEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				debug.SetGCPercent(prev)
				return
			case <-t.C:
				if p := pace(); p != last {
					debug.SetGCPercent(p)
					last = p
				}
			}
		}
	}()
}
