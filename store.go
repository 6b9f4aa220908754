package dlm

import (
	"context"
	"time"
)

// Store keeps lock state durably. Backends (sqlite, postgres) implement it
// with a handful of storage primitives; all lock semantics live in LockState
// and in the engine that drives it, so every backend behaves the same.
type Store interface {
	// Update runs fn in a write transaction and returns once the
	// transaction is durable (fsynced), or with an error. If fn returns an
	// error none of its writes take effect. A store may run the fns of
	// several concurrent Updates in one transaction and commit them
	// together (group commit); fn must therefore be quick, must not block
	// on anything but tx, and must not keep tx after it returns.
	//
	// An error from the store itself (not from fn) is an *Error with code
	// unavailable; the change may or may not have been committed.
	Update(ctx context.Context, fn func(Tx) error) error
	// View runs fn in a read-only transaction that sees committed data.
	View(ctx context.Context, fn func(ReadTx) error) error
	// Close releases the store. Calls after Close fail with unavailable.
	Close() error
}

// ReadTx reads lock state. Every read answers as of Now.
type ReadTx interface {
	// Now is the transaction's single notion of the present: the store's
	// clock for SQLite, the database's now() for PostgreSQL.
	Now() time.Time
	// LoadLock returns the state of key with every stored holder and
	// waiter, expired or not (callers apply LockState.View or Expire). A
	// lock never used has Token 0 and no holders. In a write transaction
	// it also locks key against concurrent writers until the end of the
	// transaction.
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
	// DueLocks returns up to limit locks with a holder expired or a waiter
	// past its deadline at Now.
	DueLocks(ctx context.Context, limit int) ([]Key, error)
	// NextDue returns the earliest lease expiry or waiter deadline stored,
	// or the zero time if there is none.
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
	// It may cost a scan of every lease, so callers cache its answer. In
	// a write transaction it need not see that transaction's own saves.
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

// Tx is a write transaction.
type Tx interface {
	ReadTx
	// Save persists c, which the operations on s produced since s was
	// loaded. A store that numbers events when they are written assigns
	// the IDs of c.Events in order; one that numbers them after commit
	// (PostgreSQL) leaves them 0, and they are read back from Events.
	Save(ctx context.Context, s *LockState, c *Change) error
	// Usage returns how many leases and waiters tenant has stored.
	Usage(ctx context.Context, tenant string) (leases, waiters int64, err error)
	// CreateTenant adds a tenant; it fails with an invalid_argument *Error
	// if the name is taken.
	CreateTenant(ctx context.Context, t Tenant) error
	// PutAPIKey stores a new key.
	PutAPIKey(ctx context.Context, k APIKey) error
	// RevokeAPIKey marks a key of tenant revoked; false if there is none.
	RevokeAPIKey(ctx context.Context, tenant, id string) (bool, error)
	// PruneEnded forgets ended leases that ended before t.
	PruneEnded(ctx context.Context, before time.Time) error
	// PruneEvents deletes up to limit of the oldest events that are older
	// than before or not among the newest keep, and returns how many it
	// deleted. The limit keeps each pruning transaction short.
	PruneEvents(ctx context.Context, before time.Time, keep int64, limit int) (int, error)
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
