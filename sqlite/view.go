package sqlite

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/dlmhq/dlm"
)

// viewTx is a read (Store.View): lock state from the committer's memory,
// which is the state; history (ended leases, events), tenants and keys
// from the file, through readTx.
type viewTx struct {
	readTx
	c *committer
}

var _ dlm.ReadTx = (*viewTx)(nil)

func (tx *viewTx) LoadLock(ctx context.Context, key dlm.Key) (*dlm.LockState, error) {
	tx.c.memMu.RLock()
	s, ok := tx.c.memState(key)
	tx.c.memMu.RUnlock()
	if ok {
		return s, nil
	}
	return s, tx.token(ctx, s)
}

// FindLease implements dlm.ReadTx: live leases from memory, ended ones
// from the file.
func (tx *viewTx) FindLease(ctx context.Context, id string) (*dlm.Lease, *dlm.EndedLease, error) {
	m := tx.c.mem
	tx.c.memMu.RLock()
	var live *dlm.Lease
	if k, ok := m.leases[id]; ok {
		live = m.lease(k, id)
	}
	tx.c.memMu.RUnlock()
	if live != nil {
		return live, nil, nil
	}
	ended, err := tx.endedLease(ctx, id)
	return nil, ended, err
}

func (tx *viewTx) FindIdempotent(ctx context.Context, tenant, idem string) (dlm.Key, bool, error) {
	m := tx.c.mem
	tx.c.memMu.RLock()
	defer tx.c.memMu.RUnlock()
	k, ok := m.idem[idemKey{tenant, idem}]
	return k, ok && m.hasIdem(k, tenant, idem), nil
}

// ListLocks implements dlm.ReadTx with a scan of the locks in memory: a
// listing costs time in the number of locks with holders or waiters.
func (tx *viewTx) ListLocks(ctx context.Context, ns, prefix, after string, limit int) ([]dlm.LockState, error) {
	m := tx.c.mem
	tx.c.memMu.RLock()
	defer tx.c.memMu.RUnlock()
	var names []string
	for k := range m.locks {
		if k.Namespace == ns && k.Name > after && strings.HasPrefix(k.Name, prefix) {
			names = append(names, k.Name)
		}
	}
	slices.Sort(names)
	locks := []dlm.LockState{}
	for _, n := range names {
		if len(locks) == limit {
			break
		}
		v := m.state(dlm.Key{Namespace: ns, Name: n}).View(tx.now)
		if len(v.Holders) > 0 || len(v.Waiters) > 0 {
			locks = append(locks, v)
		}
	}
	return locks, nil
}

func (tx *viewTx) DueLocks(ctx context.Context, limit int) ([]dlm.Key, error) {
	tx.c.memMu.RLock()
	defer tx.c.memMu.RUnlock()
	return tx.c.mem.due.dueBy(nanos(tx.now), limit), nil
}

func (tx *viewTx) NextDue(ctx context.Context) (time.Time, error) {
	tx.c.memMu.RLock()
	defer tx.c.memMu.RUnlock()
	if t, ok := tx.c.mem.due.next(); ok {
		return fromNanos(t), nil
	}
	return time.Time{}, nil
}

// Stats implements dlm.ReadTx with a scan of the locks in memory.
func (tx *viewTx) Stats(ctx context.Context) (dlm.Stats, error) {
	tx.c.memMu.RLock()
	defer tx.c.memMu.RUnlock()
	var st dlm.Stats
	now := nanos(tx.now)
	for _, l := range tx.c.mem.locks {
		for i := range l.holders {
			if l.holders[i].expires > now {
				st.Leases.Add(l.holders[i].mode, 1)
			}
		}
		for i := range l.waiters {
			if nanos(l.waiters[i].Deadline) > now {
				st.Waiters.Add(l.waiters[i].Mode, 1)
			}
		}
	}
	return st, nil
}
