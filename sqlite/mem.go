package sqlite

import (
	"context"
	"database/sql"
	"slices"
	"time"

	"github.com/dlmhq/dlm"
)

// memTable is the committer's copy of every lock that has holders or
// waiters, exactly as last committed. The committer is the only writer of the
// file, so the copy cannot go stale: batches load locks from here instead of
// the file, with no I/O. It is loaded once when the committer starts.
type memTable struct {
	locks   map[dlm.Key]*memLock     // locks with holders, waiters or a lock-delay
	waiters map[dlm.Key][]dlm.Waiter // the queues of the few locks that have one
	delays  map[dlm.Key]int64        // DelayUntil (unix ns) of the few locks in a lock-delay
	leases  map[string]dlm.Key       // live lease ID → its lock
	idem    map[idemKey]dlm.Key      // idempotency key of a holder or waiter → its lock
	tenants interner                 // the tenants that memLeases name by number
	// idle keeps the fencing token of recently emptied locks, so that
	// taking one again needs no read. Bounded by maxIdle.
	idle map[dlm.Key]int64
}

// memLock is a lock's committed state, kept compact: every held lease costs
// memory for as long as it is held, and a server may hold millions. Most
// locks have one holder, kept in the lock itself (one allocation of 96
// bytes, not two of 176), and no waiters (kept apart, in memTable.waiters).
type memLock struct {
	token int64
	one   [1]memLease // the only holder; its id is "" if there is none
	more  *[]memLease // every holder, when there are several
}

func (l *memLock) holders() []memLease {
	switch {
	case l.more != nil:
		return *l.more
	case l.one[0].id != "":
		return l.one[:]
	}
	return nil
}

// memLease is a dlm.Lease without the key its lock already has, its times
// as unix nanoseconds, its tenant as a number and what few leases have (an
// idempotency key, a requested TTL other than the TTL) behind a pointer:
// 80 bytes instead of 176.
type memLease struct {
	id, holder        string
	token, ttl        int64
	acquired, expires int64
	rare              *memRare // nil: no idempotency key, requested TTL = TTL, no terms
	tenant            uint32
	mode              dlm.Mode
}

type memRare struct {
	idem      string
	requested int64
	terms     dlm.Terms
}

func (m *memTable) compact(l *dlm.Lease) memLease {
	ml := memLease{id: l.ID, tenant: m.tenants.number(l.Tenant), holder: l.HolderID,
		token: l.Token, ttl: int64(l.TTL), acquired: nanos(l.AcquiredAt), expires: nanos(l.ExpiresAt), mode: l.Mode}
	if l.IdempotencyKey != "" || l.RequestedTTL != l.TTL || l.Terms != (dlm.Terms{}) {
		ml.rare = &memRare{idem: l.IdempotencyKey, requested: int64(l.RequestedTTL), terms: l.Terms}
	}
	return ml
}

func (m *memTable) lease(k dlm.Key, ml *memLease) dlm.Lease {
	l := dlm.Lease{ID: ml.id, Tenant: m.tenants.name(ml.tenant), Key: k, Mode: ml.mode, HolderID: ml.holder, Token: ml.token,
		TTL: time.Duration(ml.ttl), AcquiredAt: fromNanos(ml.acquired), ExpiresAt: fromNanos(ml.expires),
		RequestedTTL: time.Duration(ml.ttl)}
	if ml.rare != nil {
		l.IdempotencyKey, l.RequestedTTL, l.Terms = ml.rare.idem, time.Duration(ml.rare.requested), ml.rare.terms
	}
	return l
}

func (ml *memLease) idem() string {
	if ml.rare == nil {
		return ""
	}
	return ml.rare.idem
}

// interner numbers strings: the tenants of held leases, which are few and
// repeated on every lease. Numbers are never taken back.
type interner struct {
	names   []string
	numbers map[string]uint32
}

func (in *interner) number(s string) uint32 {
	if n, ok := in.numbers[s]; ok {
		return n
	}
	if in.numbers == nil {
		in.numbers = map[string]uint32{}
	}
	n := uint32(len(in.names))
	in.names = append(in.names, s)
	in.numbers[s] = n
	return n
}

func (in *interner) name(n uint32) string { return in.names[n] }

type idemKey struct{ tenant, key string }

// maxIdle bounds the idle token cache; past it, arbitrary entries are
// forgotten and read back from the file when needed. A variable so that a
// test can make it small.
var maxIdle = 1 << 16

func newMemTable() *memTable {
	return &memTable{
		locks:   map[dlm.Key]*memLock{},
		waiters: map[dlm.Key][]dlm.Waiter{},
		delays:  map[dlm.Key]int64{},
		leases:  map[string]dlm.Key{},
		idem:    map[idemKey]dlm.Key{},
		idle:    map[dlm.Key]int64{},
	}
}

// load reads every lock with holders, waiters or a lock-delay from the file.
func (m *memTable) load(ctx context.Context, conn *sql.Conn) error {
	tx := &readTx{q: conn}
	var keys []dlm.Key
	err := tx.queryEach(ctx, func(r *sql.Rows) error {
		var k dlm.Key
		keys = append(keys, k)
		return r.Scan(&keys[len(keys)-1].Namespace, &keys[len(keys)-1].Name)
	}, `SELECT ns, name FROM leases UNION SELECT ns, name FROM waiters
		UNION SELECT ns, name FROM locks WHERE delay_until IS NOT NULL`)
	if err != nil {
		return err
	}
	for _, k := range keys {
		s, err := tx.LoadLock(ctx, k)
		if err != nil {
			return err
		}
		m.put(s)
	}
	return nil
}

// state returns a copy of the committed state of key, or nil if it has
// neither holders, waiters, a lock-delay nor a remembered token.
func (m *memTable) state(k dlm.Key) *dlm.LockState {
	if l := m.locks[k]; l != nil {
		hs := l.holders()
		s := &dlm.LockState{Key: k, Token: l.token, Holders: make([]dlm.Lease, len(hs)), Waiters: slices.Clone(m.waiters[k])}
		if d, ok := m.delays[k]; ok {
			s.DelayUntil = fromNanos(d)
		}
		for i := range hs {
			s.Holders[i] = m.lease(k, &hs[i])
		}
		return s
	}
	if t, ok := m.idle[k]; ok {
		return &dlm.LockState{Key: k, Token: t}
	}
	return nil
}

// holder returns the committed holder id of lock k, or nil.
func (m *memTable) holder(k dlm.Key, id string) *dlm.Lease {
	if l := m.locks[k]; l != nil {
		for i, hs := 0, l.holders(); i < len(hs); i++ {
			if hs[i].id == id {
				h := m.lease(k, &hs[i])
				return &h
			}
		}
	}
	return nil
}

// hasIdem reports whether lock k has a committed holder or waiter that
// tenant made with idempotency key idem.
func (m *memTable) hasIdem(k dlm.Key, tenant, idem string) bool {
	l := m.locks[k]
	if l == nil {
		return false
	}
	for i, hs := 0, l.holders(); i < len(hs); i++ {
		if h := &hs[i]; h.idem() == idem && m.tenants.name(h.tenant) == tenant {
			return true
		}
	}
	return slices.ContainsFunc(m.waiters[k], func(w dlm.Waiter) bool { return w.Tenant == tenant && w.IdempotencyKey == idem })
}

// put makes s the committed state of its lock and updates the indexes.
func (m *memTable) put(s *dlm.LockState) {
	if old := m.locks[s.Key]; old != nil {
		for i, hs := 0, old.holders(); i < len(hs); i++ {
			h := &hs[i]
			delete(m.leases, h.id)
			if idem := h.idem(); idem != "" {
				delete(m.idem, idemKey{m.tenants.name(h.tenant), idem})
			}
		}
		for _, w := range m.waiters[s.Key] {
			if w.IdempotencyKey != "" {
				delete(m.idem, idemKey{w.Tenant, w.IdempotencyKey})
			}
		}
		delete(m.waiters, s.Key)
		delete(m.delays, s.Key)
	}
	// A lock-delay is kept with the locks, not the idle tokens, which may
	// be forgotten: it lasts no longer than a minute, until a sweep clears it.
	if len(s.Holders) == 0 && len(s.Waiters) == 0 && s.DelayUntil.IsZero() {
		delete(m.locks, s.Key)
		if len(m.idle) >= maxIdle {
			for k := range m.idle {
				delete(m.idle, k)
				break
			}
		}
		m.idle[s.Key] = s.Token
		return
	}
	delete(m.idle, s.Key)
	l := &memLock{token: s.Token}
	holders := l.one[:min(len(s.Holders), 1)]
	if len(s.Holders) > 1 {
		holders = make([]memLease, len(s.Holders))
		l.more = &holders
	}
	if len(s.Waiters) > 0 {
		m.waiters[s.Key] = slices.Clone(s.Waiters)
	}
	if !s.DelayUntil.IsZero() {
		m.delays[s.Key] = nanos(s.DelayUntil)
	}
	m.locks[s.Key] = l
	for i := range s.Holders {
		h := &s.Holders[i]
		holders[i] = m.compact(h)
		m.leases[h.ID] = s.Key
		if h.IdempotencyKey != "" {
			m.idem[idemKey{h.Tenant, h.IdempotencyKey}] = s.Key
		}
	}
	for _, w := range s.Waiters {
		if w.IdempotencyKey != "" {
			m.idem[idemKey{w.Tenant, w.IdempotencyKey}] = s.Key
		}
	}
}

// overlay is what one committed batch changed: the new states of the
// locks it saved, for the memTable, and the rows to write for them. Rows are
// written table by table, in a few multi-row statements (see flush), for
// many batches at once. Until the applier has written it, the overlay also
// answers for the fencing tokens and ended leases that are not in the file
// yet (see committer.token and committer.ended).
type overlay struct {
	locks     map[dlm.Key]*dlm.LockState // the last saved state of each lock, until the commit
	endedByID map[string]int             // leases ended in the overlay: their index in ended
	usage     map[string]usage           // change to each tenant's counts
	tokens    map[dlm.Key]int64          // new fencing high-water marks
	delays    map[dlm.Key]time.Time      // new DelayUntil of locks, zero when cleared

	granted  []dlm.Lease
	renewed  []dlm.Lease
	ended    []dlm.EndedLease
	queued   []dlm.Waiter
	retaken  []dlm.Waiter
	dequeued []string
	events   []dlm.Event
}

func newOverlay() *overlay {
	return &overlay{
		locks: map[dlm.Key]*dlm.LockState{}, endedByID: map[string]int{},
		usage: map[string]usage{}, tokens: map[dlm.Key]int64{}, delays: map[dlm.Key]time.Time{},
	}
}

func (o *overlay) reset() {
	clear(o.locks)
	clear(o.endedByID)
	clear(o.usage)
	clear(o.tokens)
	clear(o.delays)
	o.granted, o.renewed, o.ended = o.granted[:0], o.renewed[:0], o.ended[:0]
	o.queued, o.retaken, o.dequeued, o.events = o.queued[:0], o.retaken[:0], o.dequeued[:0], o.events[:0]
}

// empty reports whether nothing was saved.
func (o *overlay) empty() bool { return len(o.locks) == 0 && len(o.events) == 0 }

// onlyWaiters reports whether the saves only queued, requeued or dequeued
// waiters: no lease was granted, renewed or ended, and no lock-delay began
// or ended.
func (o *overlay) onlyWaiters() bool {
	return len(o.granted) == 0 && len(o.renewed) == 0 && len(o.ended) == 0 && len(o.tokens) == 0 && len(o.delays) == 0
}

func (o *overlay) count(tenant string, leases, waiters int64) {
	u := o.usage[tenant]
	u.leases += leases
	u.waiters += waiters
	o.usage[tenant] = u
}

// save records s as saved with what c did to it. The events of c must
// already have their IDs. s is kept, not copied: the commit puts it into
// the memTable, which copies it, before it returns.
func (o *overlay) save(s *dlm.LockState, c *dlm.Change) {
	o.locks[s.Key] = s
	if len(c.Granted) > 0 {
		o.tokens[s.Key] = s.Token
	}
	if c.Delayed {
		o.delays[s.Key] = s.DelayUntil
	}
	for _, l := range c.Granted {
		o.count(l.Tenant, 1, 0)
	}
	for i, e := range c.Ended {
		o.endedByID[e.ID] = len(o.ended) + i
		o.count(e.Tenant, -1, 0)
	}
	for _, w := range c.Queued {
		o.count(w.Tenant, 0, 1)
	}
	for _, w := range c.Dequeued {
		o.dequeued = append(o.dequeued, w.ID)
		o.count(w.Tenant, 0, -1)
	}
	o.granted = append(o.granted, c.Granted...)
	o.renewed = append(o.renewed, c.Renewed...)
	o.ended = append(o.ended, c.Ended...)
	o.queued = append(o.queued, c.Queued...)
	o.retaken = append(o.retaken, c.Retaken...)
	o.events = append(o.events, c.Events...)
}
