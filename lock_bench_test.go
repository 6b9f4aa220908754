package dlm_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/dlmhq/dlm"
)

// The core's cost per decision, without storage: what every store pays on
// top of its own work.

// BenchmarkLockStateAcquireRelease: one exclusive acquire and its release.
func BenchmarkLockStateAcquireRelease(b *testing.B) {
	k := dlm.Key{Namespace: "t", Name: "bench"}
	s := &dlm.LockState{Key: k}
	now := time.Unix(1_700_000_000, 0)
	ids := benchIDs(1024)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		var c dlm.Change
		r := dlm.Request{ID: ids[i%len(ids)], Tenant: "t", Key: k, Mode: dlm.Exclusive, HolderID: "h", TTL: time.Minute}
		if out, _, _, err := s.Acquire(now, r, &c); err != nil || out != dlm.Granted {
			b.Fatalf("acquire: %v %v", out, err)
		}
		if _, ok := s.Release(now, r.ID, &c); !ok {
			b.Fatal("release found no lease")
		}
	}
}

// BenchmarkLockStateHandoff: a release that grants the head of a queue of
// waiters, and the released holder queueing again at the back.
func BenchmarkLockStateHandoff(b *testing.B) {
	for _, waiters := range []int{1, 32, 1024} {
		b.Run(fmt.Sprintf("waiters=%d", waiters), func(b *testing.B) {
			k := dlm.Key{Namespace: "t", Name: "bench"}
			s := &dlm.LockState{Key: k}
			now := time.Unix(1_700_000_000, 0)
			ids := benchIDs(waiters + 1)
			req := func(id string) dlm.Request {
				return dlm.Request{ID: id, Tenant: "t", Key: k, Mode: dlm.Exclusive, HolderID: id, TTL: time.Minute, Wait: time.Hour}
			}
			for _, id := range ids {
				s.Acquire(now, req(id), &dlm.Change{})
			}
			b.ReportAllocs()
			for b.Loop() {
				var c dlm.Change
				holder := s.Holders[0].ID
				if _, ok := s.Release(now, holder, &c); !ok || len(c.Granted) != 1 {
					b.Fatalf("release granted %d", len(c.Granted))
				}
				if out, _, _, err := s.Acquire(now, req(holder), &c); err != nil || out != dlm.Queued {
					b.Fatalf("requeue: %v %v", out, err)
				}
			}
		})
	}
}

func benchIDs(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("lease-%06d", i)
	}
	return ids
}
