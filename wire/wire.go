// Package wire holds the JSON shapes of the dlm HTTP API (the API (README, http/openapi.json)): the
// server encodes them, the Go client decodes them, and the command line
// prints them with --json, so the three cannot drift apart.
//
// Times are RFC 3339 with nanoseconds in UTC, durations integer milliseconds
// in fields ending _ms, and lists are never null. It imports the root package
// only, so the client stays free of server code.
package wire

import (
	"time"

	"github.com/dlmhq/dlm"
)

// Lease is a lease object. LeaseID is a bearer capability: it is set only in
// answers to the lease's owner (acquire, get, renew, release).
type Lease struct {
	LeaseID      string    `json:"lease_id,omitempty"`
	Name         string    `json:"name"`
	Scope        string    `json:"scope"`
	Mode         string    `json:"mode"`
	HolderID     string    `json:"holder_id"`
	FencingToken int64     `json:"fencing_token"`
	TTLMs        int64     `json:"ttl_ms"`
	AcquiredAt   time.Time `json:"acquired_at"`
	ExpiresAt    time.Time `json:"expires_at"`
	// The lock features the lease was acquired with, when asked for.
	Limit       int   `json:"limit,omitempty"`
	LockDelayMs int64 `json:"lock_delay_ms,omitempty"`
	MaxHoldMs   int64 `json:"max_hold_ms,omitempty"`
	Replayed    bool  `json:"replayed,omitempty"`
}

// Holder is l as anybody may see it: without its ID.
func Holder(l *dlm.Lease) Lease {
	return Lease{
		Name:         l.Key.Name,
		Scope:        l.Key.Scope(),
		Mode:         l.Mode.String(),
		HolderID:     l.HolderID,
		FencingToken: l.Token,
		TTLMs:        l.TTL.Milliseconds(),
		AcquiredAt:   l.AcquiredAt.UTC(),
		ExpiresAt:    l.ExpiresAt.UTC(),
		Limit:        l.Limit,
		LockDelayMs:  l.LockDelay.Milliseconds(),
		MaxHoldMs:    l.MaxHold.Milliseconds(),
	}
}

// OwnLease is l as its owner sees it: with its ID.
func OwnLease(l *dlm.Lease) Lease {
	w := Holder(l)
	w.LeaseID = l.ID
	return w
}

// Holders shows ls without their IDs; an empty list is [], never null.
func Holders(ls []dlm.Lease) []Lease {
	ws := make([]Lease, len(ls))
	for i := range ls {
		ws[i] = Holder(&ls[i])
	}
	return ws
}

// Waiter is a queued acquire as inspect and list show it.
type Waiter struct {
	HolderID     string    `json:"holder_id"`
	Mode         string    `json:"mode"`
	QueuedAt     time.Time `json:"queued_at"`
	WaitDeadline time.Time `json:"wait_deadline"`
	Limit        int       `json:"limit,omitempty"`
	// Locks, for the entry of a multi-lock acquire, is how many locks it
	// waits for together.
	Locks int `json:"locks,omitempty"`
}

// Lock is a lock as inspect and list show it.
type Lock struct {
	Name         string   `json:"name"`
	Scope        string   `json:"scope"`
	FencingToken int64    `json:"fencing_token"`
	Holders      []Lease  `json:"holders"`
	Waiters      []Waiter `json:"waiters"`
	// Limit is the lock's semaphore limit while it has holders or waiters
	// that gave one.
	Limit int `json:"limit,omitempty"`
	// LockDelayUntil is set while a lock-delay keeps the lock from being
	// granted.
	LockDelayUntil *time.Time `json:"lock_delay_until,omitempty"`
}

// FromLock shows s, holders without their IDs.
func FromLock(s *dlm.LockState) Lock {
	w := Lock{
		Name:         s.Key.Name,
		Scope:        s.Key.Scope(),
		FencingToken: s.Token,
		Holders:      Holders(s.Holders),
		Waiters:      make([]Waiter, len(s.Waiters)),
	}
	for i, x := range s.Waiters {
		w.Waiters[i] = Waiter{
			HolderID: x.HolderID, Mode: x.Mode.String(), QueuedAt: x.QueuedAt.UTC(), WaitDeadline: x.Deadline.UTC(),
			Limit: x.Limit, Locks: len(x.GroupKeys),
		}
		w.Limit = x.Limit
	}
	if len(s.Holders) > 0 {
		w.Limit = s.Holders[0].Limit
	}
	if !s.DelayUntil.IsZero() {
		t := s.DelayUntil.UTC()
		w.LockDelayUntil = &t
	}
	return w
}

// LockRef is one lock of a multi-lock acquire.
type LockRef struct {
	Name  string `json:"name"`
	Mode  string `json:"mode,omitempty"`
	Scope string `json:"scope,omitempty"`
	Limit int    `json:"limit,omitempty"`
}

// AcquireManyBody is the body of POST /v1/acquire (and of the session op
// acquire_many): 2 to 64 locks, all or nothing.
type AcquireManyBody struct {
	Locks          []LockRef `json:"locks"`
	HolderID       string    `json:"holder_id"`
	TTLMs          *int64    `json:"ttl_ms,omitempty"`
	WaitMs         *int64    `json:"wait_ms,omitempty"`
	IdempotencyKey string    `json:"idempotency_key,omitempty"`
	LockDelayMs    *int64    `json:"lock_delay_ms,omitempty"`
	MaxHoldMs      *int64    `json:"max_hold_ms,omitempty"`
}

// Leases is the answer to a multi-lock acquire: the leases in the order of
// the request's locks.
type Leases struct {
	Leases   []Lease `json:"leases"`
	Replayed bool    `json:"replayed,omitempty"`
}

// Event is an entry of the event log. It names the grant by its fencing
// token and never carries a lease ID.
type Event struct {
	ID           int64     `json:"id"`
	Type         string    `json:"type"`
	Name         string    `json:"name"`
	Scope        string    `json:"scope"`
	HolderID     string    `json:"holder_id"`
	Mode         string    `json:"mode"`
	FencingToken int64     `json:"fencing_token"`
	At           time.Time `json:"at"`
}

// FromEvent shows e.
func FromEvent(e *dlm.Event) Event {
	return Event{
		ID: e.ID, Type: e.Type.String(), Name: e.Key.Name, Scope: e.Key.Scope(),
		HolderID: e.HolderID, Mode: e.Mode.String(), FencingToken: e.Token, At: e.At.UTC(),
	}
}
