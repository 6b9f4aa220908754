// Package dlm holds the vocabulary of the dlm lock service and its pure core:
// modes, keys, leases, waiters, events, the coded error type, and LockState,
// the state machine of one lock that every storage backend drives.
//
// Nothing in this package reads a clock or does I/O. Callers pass "now" in, so
// the semantics can be tested deterministically and shared by the SQLite and
// PostgreSQL stores alike.
package dlm

import (
	"fmt"
	"time"
)

// Mode is the way a lease holds a lock.
type Mode uint8

// Modes. Exclusive conflicts with every other lease; Shared is compatible
// with Shared.
const (
	Exclusive Mode = 1
	Shared    Mode = 2
)

// String returns the wire name of m: "exclusive" or "shared".
func (m Mode) String() string {
	switch m {
	case Exclusive:
		return "exclusive"
	case Shared:
		return "shared"
	}
	return fmt.Sprintf("Mode(%d)", m)
}

// ParseMode parses a wire name. The empty string means Exclusive, the default.
func ParseMode(s string) (Mode, bool) {
	switch s {
	case "", "exclusive":
		return Exclusive, true
	case "shared":
		return Shared, true
	}
	return 0, false
}

// Compatible reports whether a lease in mode a may coexist with one in mode b.
func Compatible(a, b Mode) bool { return a == Shared && b == Shared }

// GlobalNamespace is the namespace of locks in the global scope, shared by
// every tenant. No tenant can be named this way, so it cannot collide.
const GlobalNamespace = ""

// Key identifies one lock: the namespace it lives in and its name.
type Key struct {
	Namespace string // a tenant name, or GlobalNamespace
	Name      string
}

// Global reports whether k lives in the global scope.
func (k Key) Global() bool { return k.Namespace == GlobalNamespace }

// Scope returns the wire name of k's scope: "tenant" or "global".
func (k Key) Scope() string {
	if k.Global() {
		return "global"
	}
	return "tenant"
}

// Lease is one grant of a mode on a lock to a holder.
//
// ID is a bearer capability: it alone renews and releases the lease, so it is
// only ever shown to the acquirer.
type Lease struct {
	ID             string
	Tenant         string // the tenant that acquired it; only it may use ID
	Key            Key
	Mode           Mode
	HolderID       string
	Token          int64 // fencing token
	TTL            time.Duration
	AcquiredAt     time.Time
	ExpiresAt      time.Time
	IdempotencyKey string
	// RequestedTTL is the TTL the acquire asked for. A renew may change
	// TTL but never this, so that a retry with the same idempotency key
	// is compared with the original request (guarantee 6).
	RequestedTTL time.Duration
	Terms
}

// Terms are what an acquire may ask for beyond its mode and TTL. A lease
// and a waiter keep the terms they were asked with.
type Terms struct {
	// Limit, on a shared lease, makes the lock a semaphore of at most
	// Limit holders at once. Every holder and waiter of a lock has the same
	// Limit (0: none, for any mode).
	Limit int
	// LockDelay keeps the lock from being granted to anyone for this long
	// after the lease ends by expiry or force-release, not by release: a
	// holder that lost its lock without knowing it gets time to notice.
	LockDelay time.Duration
	// MaxHold caps the lease's expiry at AcquiredAt+MaxHold, whatever the
	// renewals (0: no cap).
	MaxHold time.Duration
}

// expiry is when a lease of these terms granted or renewed at now with ttl
// runs out: now+ttl, capped by MaxHold from acquired.
func (t Terms) expiry(acquired, now time.Time, ttl time.Duration) time.Time {
	end := now.Add(ttl)
	if t.MaxHold > 0 {
		if limit := acquired.Add(t.MaxHold); limit.Before(end) {
			return limit
		}
	}
	return end
}

// Live reports whether l is held at now. A lease is held strictly before its
// expiry: at ExpiresAt it is over, whether or not anything has removed it.
func (l *Lease) Live(now time.Time) bool { return now.Before(l.ExpiresAt) }

// EndReason says why a lease stopped being held.
type EndReason uint8

// End reasons.
const (
	Released      EndReason = 1
	Expired       EndReason = 2
	ForceReleased EndReason = 3
)

// String returns the wire name of r.
func (r EndReason) String() string {
	switch r {
	case Released:
		return "released"
	case Expired:
		return "expired"
	case ForceReleased:
		return "force_released"
	}
	return fmt.Sprintf("EndReason(%d)", r)
}

// EndedLease is a lease that is no longer held, remembered so that later
// calls with its ID learn why (410 lease_ended) rather than 404.
type EndedLease struct {
	Lease
	Reason  EndReason
	EndedAt time.Time
}

// Waiter is a blocking acquire queued on a lock.
type Waiter struct {
	// ID is the ID the lease gets when the waiter is granted, so that the
	// waiting request can recognise its grant wherever it is made.
	ID     string
	Tenant string
	Key    Key
	Mode   Mode
	// Seq orders the waiters of one lock: lower is earlier (FIFO).
	Seq            int64
	HolderID       string
	TTL            time.Duration
	IdempotencyKey string
	// Ticket names the request currently waiting on this entry. A retried
	// idempotent acquire takes the entry over with a new ticket, so that the
	// abandoned request's cancellation cannot remove it.
	Ticket   string
	QueuedAt time.Time
	Deadline time.Time
	Terms
	// Group is set on the entries of a multi-lock acquire, one per lock it
	// asks for: the ID of its entry on the first of them (see AcquireAll).
	// GroupKeys are those locks, in the order asked. An entry with a Group
	// is granted only with the others, by GrantGroup.
	Group     string
	GroupKeys []Key
}
