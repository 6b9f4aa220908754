package sqlite

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// TestMemTableRoundTrip puts locks of every shape into the memTable and
// reads back what was put: one holder, several (shared), waiters only, an
// idempotency key and a renewed TTL (kept apart from the common lease), and
// an emptied lock.
func TestMemTableRoundTrip(t *testing.T) {
	at := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	lease := func(id, tenant, idem string, ttl, requested time.Duration) dlm.Lease {
		return dlm.Lease{ID: id, Tenant: tenant, Key: dlm.Key{Namespace: "t", Name: "n"}, Mode: dlm.Shared, HolderID: "h-" + id,
			Token: 7, TTL: ttl, RequestedTTL: requested, AcquiredAt: at, ExpiresAt: at.Add(ttl), IdempotencyKey: idem}
	}
	waiter := dlm.Waiter{ID: "w", Tenant: "t", Key: dlm.Key{Namespace: "t", Name: "n"}, Seq: 1, Mode: dlm.Exclusive,
		HolderID: "hw", TTL: time.Second, IdempotencyKey: "iw", Ticket: "x", QueuedAt: at, Deadline: at.Add(time.Minute)}
	for _, tc := range []struct {
		name string
		s    dlm.LockState
	}{
		{"one holder", dlm.LockState{Token: 7, Holders: []dlm.Lease{lease("a", "t", "", time.Second, time.Second)}}},
		{"idempotency key and renewed TTL", dlm.LockState{Token: 7, Holders: []dlm.Lease{lease("a", "t", "k", time.Minute, time.Second)}}},
		{"shared, two tenants", dlm.LockState{Token: 7, Holders: []dlm.Lease{lease("a", "t", "", time.Second, time.Second), lease("b", "u", "k", time.Second, time.Second)}}},
		{"a holder and a waiter", dlm.LockState{Token: 7, Holders: []dlm.Lease{lease("a", "t", "", time.Second, time.Second)}, Waiters: []dlm.Waiter{waiter}}},
		{"waiters only", dlm.LockState{Token: 7, Waiters: []dlm.Waiter{waiter}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMemTable()
			k := dlm.Key{Namespace: "t", Name: "n"}
			tc.s.Key = k
			m.put(&tc.s)
			if diff := cmp.Diff(m.state(k), &tc.s, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("state (-got +want):\n%s", diff)
			}
			for _, h := range tc.s.Holders {
				if got := m.holder(k, h.ID); got == nil || *got != h {
					t.Errorf("holder(%q) = %v, want %v", h.ID, got, h)
				}
				if h.IdempotencyKey != "" && !m.hasIdem(k, h.Tenant, h.IdempotencyKey) {
					t.Errorf("hasIdem(%q, %q) = false", h.Tenant, h.IdempotencyKey)
				}
			}
			for _, w := range tc.s.Waiters {
				if !m.hasIdem(k, w.Tenant, w.IdempotencyKey) {
					t.Errorf("hasIdem of waiter %q = false", w.ID)
				}
			}
			m.put(&dlm.LockState{Key: k, Token: 8})
			if got := m.state(k); len(m.locks) != 0 || len(m.waiters) != 0 || len(m.leases) != 0 || len(m.idem) != 0 || got.Token != 8 || len(got.Holders)+len(got.Waiters) != 0 {
				t.Errorf("emptied lock left %d locks, %d queues, %d leases, %d keys; state %+v", len(m.locks), len(m.waiters), len(m.leases), len(m.idem), got)
			}
		})
	}
}

// TestMemTableBytesPerLease bounds what a held lease costs in the memTable,
// which is most of what a server holding many leases uses: the lock with its
// one holder, both indexes, and the lease's ID, name and holder strings
// (made here as the server makes them, one of each per lease): 344 bytes;
// the lock and its lease in two allocations of 176 bytes made it 424.
func TestMemTableBytesPerLease(t *testing.T) {
	const n = 20000
	at := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	before := heapInUse()
	states := make([]dlm.LockState, n)
	for i := range states {
		k := dlm.Key{Namespace: "tenant", Name: fmt.Sprintf("locks/%08d", i)}
		states[i] = dlm.LockState{Key: k, Token: int64(i), Holders: []dlm.Lease{{
			ID: fmt.Sprintf("%036d", i), Tenant: "tenant", Key: k, Mode: dlm.Exclusive, HolderID: fmt.Sprintf("worker-%d", i),
			Token: int64(i), TTL: time.Minute, RequestedTTL: time.Minute, AcquiredAt: at, ExpiresAt: at.Add(time.Minute)}}}
	}
	m := newMemTable()
	for i := range states {
		m.put(&states[i])
	}
	states = nil // the strings stay, held by the memTable
	per := (heapInUse() - before) / n
	runtime.KeepAlive(m)
	t.Logf("%d bytes per held lease", per)
	if per > 360 {
		t.Errorf("a held lease costs %d bytes in the memTable, want at most 360", per)
	}
}

func heapInUse() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}
