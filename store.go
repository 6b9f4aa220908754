package dlm

import (
	"context"
	"time"
)

// Store keeps lock state durably. A store is a loader and a committer: the
// engine groups concurrent operations, asks the store once for everything
// the group needs (Load), runs every decision in memory on dlm.LockState,
// and hands the store the results to make durable in one commit
// (Batch.Commit). All lock semantics live in LockState and the engine, so
// every backend behaves the same; group commit lives once, in the engine.
//
// Errors from the store itself are *Error with code unavailable.
type Store interface {
	// Load reads what need names, in one round trip where the store can,
	// and keeps it from other writers until the batch commits or aborts (a
	// row lock on PostgreSQL; nothing on a store with one writer, where the
	// engine runs one batch at a time). The engine never has two batches
	// loaded whose Needs overlap, unless the store says so (see
	// ConcurrentBatches).
	Load(ctx context.Context, need *Need) (Batch, error)
	// View runs fn in a read-only transaction that sees committed data.
	View(ctx context.Context, fn func(ReadTx) error) error
	// CreateTenant adds a tenant with its first API key, in one commit; it
	// fails with an invalid_argument *Error if the name is taken.
	CreateTenant(ctx context.Context, t Tenant, first APIKey) error
	// PutAPIKey stores a new key. It fails with a not_found *Error if the
	// key's tenant (other than "", the admin's) does not exist.
	PutAPIKey(ctx context.Context, k APIKey) error
	// RevokeAPIKey marks a key of tenant revoked; false if there is none.
	RevokeAPIKey(ctx context.Context, tenant, id string) (bool, error)
	// PruneEnded forgets up to limit ended leases that ended before t and
	// returns how many it forgot.
	PruneEnded(ctx context.Context, before time.Time, limit int) (int, error)
	// PruneEvents deletes up to limit of the oldest events that are older
	// than before or not among the newest keep, and returns how many it
	// deleted. The limit keeps each pruning transaction short.
	PruneEvents(ctx context.Context, before time.Time, keep int64, limit int) (int, error)
	// Close releases the store. Calls after Close fail with unavailable.
	Close() error
}

// ConcurrentBatches is implemented by stores that can have several batches
// loaded at once (PostgreSQL, whose row locks order overlapping batches).
// The engine then keeps up to MaxBatches in flight; a store without it
// gets one at a time.
type ConcurrentBatches interface {
	MaxBatches() int
}

// Need is what one group of operations reads and writes.
type Need struct {
	// Keys are locks the group decides on.
	Keys []Key
	// Leases are lease IDs the group looks up (Batch.Lease); the store
	// also loads the lock each live one is held on.
	Leases []string
	// Idempotency are (tenant, idempotency key) pairs the group looks up
	// (Batch.Idempotent).
	Idempotency []IdempotencyKey
	// Tenants are tenants whose usage the group checks (Batch.Usage).
	Tenants []string
}

// IdempotencyKey is an idempotency key as a tenant used it.
type IdempotencyKey struct {
	Tenant, Key string
}

// Batch is what Load read, held until Commit or Abort. Its methods other
// than Commit and Abort do no I/O. It is used by one goroutine.
type Batch interface {
	// Now is the batch's single notion of the present: the store's clock
	// for the embedded store, the database's clock for PostgreSQL.
	Now() time.Time
	// Lock returns the state of key as loaded, with every stored holder
	// and waiter, expired or not: a lock never used has Token 0 and no
	// holders. It is nil for a key that Load did not load (one not in
	// Need.Keys nor held by a lease of Need.Leases). The caller decides on
	// it in place and passes it to Commit.
	Lock(key Key) *LockState
	// Lease finds lease id of Need.Leases as loaded: a stored holder
	// (possibly expired but not yet swept), or an ended lease. Both are nil
	// if the ID is unknown.
	Lease(id string) (*Lease, *EndedLease)
	// Idempotent returns the lock on which tenant has a stored lease or
	// waiter made with the idempotency key of Need.Idempotency.
	Idempotent(k IdempotencyKey) (Key, bool)
	// Usage returns how many leases and waiters a tenant of Need.Tenants
	// has stored.
	Usage(tenant string) (leases, waiters int64)
	// Commit makes saves durable, in one transaction, and ends the batch.
	// Saves are applied in order; the same lock may appear more than once,
	// once per decision with the Change that decision made. State is the
	// same *LockState each time: the lock as the batch's last decision on
	// it left it. A store that numbers events when it commits sets the
	// IDs of the saves' events, in order; one shared with other processes
	// (PostgreSQL) may leave them 0, to be read back with Events. After an
	// error the change may or may not have been committed.
	Commit(ctx context.Context, saves []Save) error
	// Abort ends the batch without writing anything.
	Abort()
}

// Save is one decision's result: the lock it decided on and what it
// changed.
type Save struct {
	State  *LockState
	Change *Change
}

// ReadTx reads lock state. Every read answers as of Now.
type ReadTx interface {
	// Now is the transaction's single notion of the present: the store's
	// clock for SQLite, the database's now() for PostgreSQL.
	Now() time.Time
	// LoadLock returns the state of key with every stored holder and
	// waiter, expired or not (callers apply LockState.View or Expire). A
	// lock never used has Token 0 and no holders.
	LoadLock(ctx context.Context, key Key) (*LockState, error)
	// FindLease finds a lease by ID: a stored holder (possibly expired but
	// not yet swept) or an ended lease. Both are nil if the ID is unknown.
	FindLease(ctx context.Context, id string) (*Lease, *EndedLease, error)
	// FindIdempotent returns the lock on which tenant has a stored lease or
	// waiter made with idempotency key idem.
	FindIdempotent(ctx context.Context, tenant, idem string) (Key, bool, error)
	// ListLocks returns, ordered by name, up to limit locks of namespace ns
	// whose name starts with prefix and sorts after after, and that have a
	// holder or waiter live at Now. Each is viewed at Now.
	ListLocks(ctx context.Context, ns, prefix, after string, limit int) ([]LockState, error)
	// DueLocks returns up to limit locks with a holder expired, a waiter
	// past its deadline or a stored DelayUntil passed at Now.
	DueLocks(ctx context.Context, limit int) ([]Key, error)
	// NextDue returns the earliest lease expiry, waiter deadline or
	// DelayUntil stored, or the zero time if there is none.
	NextDue(ctx context.Context) (time.Time, error)
	// Tenants returns every tenant ordered by name.
	Tenants(ctx context.Context) ([]Tenant, error)
	// Tenant returns one tenant.
	Tenant(ctx context.Context, name string) (Tenant, bool, error)
	// APIKey returns a stored key by its ID.
	APIKey(ctx context.Context, id string) (APIKey, bool, error)
	// Events returns up to f.Limit events with IDs above f.Since that pass
	// f, in ID order. An event must never become visible after one with a
	// larger ID has been returned: a store that assigns IDs before commit
	// holds back IDs above its oldest transaction still in flight, so that
	// a reader tailing the log by ID sees no gap.
	Events(ctx context.Context, f EventFilter) ([]Event, error)
	// LastEventID returns the largest event ID Events can return now, or 0.
	LastEventID(ctx context.Context) (int64, error)
	// FirstEventID returns the smallest event ID still retained, or 0 if
	// none is. A reader asking for events after an ID below FirstEventID-1
	// has missed pruned events.
	FirstEventID(ctx context.Context) (int64, error)
	// Stats counts, across every namespace, the leases live at Now and
	// the waiters whose deadline is after Now, by mode: for monitoring.
	// It may cost a scan of every lease, so callers cache its answer.
	Stats(ctx context.Context) (Stats, error)
}

// Stats is what a store holds at one moment, for monitoring.
type Stats struct {
	Leases  ModeCounts // leases live at the time
	Waiters ModeCounts // waiters queued, before their deadline
}

// ModeCounts is a count per mode.
type ModeCounts struct {
	Exclusive, Shared int64
}

// Add adds n to the count of mode m. Unknown modes are ignored.
func (c *ModeCounts) Add(m Mode, n int64) {
	switch m {
	case Exclusive:
		c.Exclusive += n
	case Shared:
		c.Shared += n
	}
}

// Notifier is implemented by stores that other processes write to as well.
// Changes receives a value soon after any process commits a change with
// events, so that parked acquires and watchers here learn of grants and
// events made elsewhere without polling alone. Values may be coalesced.
type Notifier interface {
	Changes() <-chan struct{}
}

// Tenant is an isolated namespace of locks.
type Tenant struct {
	Name      string
	CreatedAt time.Time
}

// APIKey is a stored credential. Only a hash of the secret is kept.
type APIKey struct {
	ID        string
	Tenant    string // "" for the admin key, which belongs to no tenant
	Hash      []byte // SHA-256 of the whole key
	CreatedAt time.Time
	Revoked   bool
}
